//! Tunnel addresses: each device's lease on its address in the tunnel network.

use std::net::IpAddr;

use jiff::Timestamp;
use model::DeviceId;

use crate::codec::{id, ms};
use crate::{Conn, StoreError};

/// The tunnel address a device holds a live lease on, if any.
pub async fn device_tunnel_address(
    c: &mut Conn,
    device: DeviceId,
    now: Timestamp,
) -> Result<Option<IpAddr>, StoreError> {
    let row: Option<String> = sqlx::query_scalar(
        "SELECT address FROM tunnel_addresses WHERE device_id = $1 AND expires_at > $2 \
         ORDER BY expires_at DESC LIMIT 1",
    )
    .bind(device.to_string())
    .bind(ms(now))
    .fetch_optional(c)
    .await?;
    row.map(|a| id::<IpAddr>("tunnel_addresses", &a))
        .transpose()
}

/// Takes `address` for `device` until `expires_at` unless another device holds a live lease
/// on it; extends the device's own lease. Returns whether the address is now the device's.
/// Atomic, so two replicas racing for one address cannot both win.
pub async fn claim_tunnel_address(
    c: &mut Conn,
    address: IpAddr,
    device: DeviceId,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO tunnel_addresses (address, device_id, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (address) DO UPDATE SET device_id = excluded.device_id, \
         expires_at = CASE WHEN tunnel_addresses.expires_at > excluded.expires_at \
         THEN tunnel_addresses.expires_at ELSE excluded.expires_at END \
         WHERE tunnel_addresses.expires_at <= $4 OR tunnel_addresses.device_id = $2",
    )
    .bind(address.to_string())
    .bind(device.to_string())
    .bind(ms(expires_at))
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Every address under a live lease.
pub async fn leased_tunnel_addresses(
    c: &mut Conn,
    now: Timestamp,
) -> Result<Vec<IpAddr>, StoreError> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT address FROM tunnel_addresses WHERE expires_at > $1")
            .bind(ms(now))
            .fetch_all(c)
            .await?;
    rows.iter()
        .map(|a| id::<IpAddr>("tunnel_addresses", a))
        .collect()
}

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $field:ident,)*) => {
        /// Why the core dropped a datagram or packet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        /// How many datagrams and packets were dropped, one counter per [`DropReason`].
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct DropCounters {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The reason's name as a metric label, e.g. `spoofed_source`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$variant => stringify!($field),)*
                }
            }
        }

        impl DropCounters {
            /// The counter for `reason`.
            pub fn get(&self, reason: DropReason) -> u64 {
                match reason {
                    $(DropReason::$variant => self.$field,)*
                }
            }

            pub(crate) fn count(&mut self, reason: DropReason) {
                match reason {
                    $(DropReason::$variant => self.$field += 1,)*
                }
            }

            /// The sum of all counters.
            pub fn total(&self) -> u64 {
                0 $(+ self.$field)*
            }
        }
    };
}

drop_reasons! {
    /// A datagram that is not a WireGuard message.
    MalformedDatagram => malformed_datagram,
    /// A handshake initiation with a bad MAC or that does not decrypt.
    InvalidHandshake => invalid_handshake,
    /// A handshake initiation from a key that belongs to no current grant.
    UnknownKey => unknown_key,
    /// A data, response or cookie message whose receiver index belongs to no current grant.
    UnknownIndex => unknown_index,
    /// A message for a current grant that boringtun refused (bad tag, no session, stale
    /// handshake timestamp, ...).
    Rejected => rejected,
    /// A data message whose counter was already seen or is too old: a replay.
    Replayed => replayed,
    /// A handshake refused because the gateway is under load and no address was given.
    UnderLoad => under_load,
    /// A decrypted packet that is not a parsable IP packet.
    MalformedPacket => malformed_packet,
    /// A decrypted packet whose source is not the grant's tunnel address.
    SpoofedSource => spoofed_source,
    /// A decrypted packet whose destination, protocol or port is outside the grant's resource.
    OutsideResource => outside_resource,
    /// A packet of a protocol other than TCP, UDP or ICMP, which resources cannot admit.
    UnsupportedProtocol => unsupported_protocol,
    /// An IP fragment, whose ports cannot be checked.
    Fragment => fragment,
    /// A packet from the TUN device that is not a parsable IP packet.
    TunMalformed => tun_malformed,
    /// A packet from the TUN device that belongs to no current grant.
    TunNoGrant => tun_no_grant,
    /// A packet for a grant whose peer has never completed a handshake, so has no address.
    NoEndpoint => no_endpoint,
    /// An output buffer smaller than the packet needs.
    BufferTooSmall => buffer_too_small,
    /// A queued datagram dropped because the caller does not drain `poll_transmit`.
    QueueFull => queue_full,
}

/// Counters of what a core did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Dropped datagrams and packets, by reason.
    pub drops: DropCounters,
    /// Handshakes answered (gateway) or completed (client).
    pub handshakes: u64,
    /// Cookie replies sent because of load.
    pub cookies_sent: u64,
    /// ICMP "administratively prohibited" replies sent into tunnels.
    pub icmp_sent: u64,
    /// Packets decapsulated and passed to the TUN device.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// Packets from the TUN device encapsulated to a peer.
    pub tx_packets: u64,
    /// Bytes of those packets.
    pub tx_bytes: u64,
}

//! The store contract: sites, gateway tokens, gateways and resources.

use super::*;

contract!(
    sites_round_trip_and_refuse_duplicates,
    gateway_tokens_are_single_use_and_expire,
    gateways_are_found_by_credential,
    resources_keep_addresses_and_ports,
);

async fn sites_round_trip_and_refuse_duplicates(s: &Store) {
    let a = site(s, "hq").await;
    let mut c = s.conn().await.unwrap();
    assert_eq!(get_site(&mut c, a.id).await.unwrap(), Some(a.clone()));
    let dup = Site {
        id: SiteId::new(),
        name: "hq".into(),
        created_at: now(),
    };
    assert!(matches!(
        insert_site(&mut c, &dup).await,
        Err(StoreError::Duplicate(_))
    ));
    let renamed = Site {
        name: "head office".into(),
        ..a.clone()
    };
    update_site(&mut c, &renamed).await.unwrap();
    assert_eq!(list_sites(&mut c).await.unwrap(), vec![renamed]);
    assert!(delete_site(&mut c, a.id).await.unwrap());
    assert!(!delete_site(&mut c, a.id).await.unwrap());
    assert_eq!(get_site(&mut c, a.id).await.unwrap(), None);
}

async fn gateway_tokens_are_single_use_and_expire(s: &Store) {
    let a = site(s, "hq").await;
    let mut c = s.conn().await.unwrap();
    let token = GatewayToken {
        id: TokenId::new(),
        site_id: a.id,
        created_at: now(),
        expires_at: now() + SignedDuration::from_hours(1),
        used_at: None,
        gateway_id: None,
    };
    insert_gateway_token(&mut c, &token, "hash-1")
        .await
        .unwrap();
    let late = now() + SignedDuration::from_hours(2);
    assert_eq!(
        consume_gateway_token(&mut c, "hash-1", GatewayId::new(), late)
            .await
            .unwrap(),
        None,
        "expired"
    );
    let g = GatewayId::new();
    assert_eq!(
        consume_gateway_token(&mut c, "hash-1", g, now())
            .await
            .unwrap(),
        Some(a.id)
    );
    assert_eq!(
        consume_gateway_token(&mut c, "hash-1", GatewayId::new(), now())
            .await
            .unwrap(),
        None,
        "replayed"
    );
    assert_eq!(
        consume_gateway_token(&mut c, "unknown", GatewayId::new(), now())
            .await
            .unwrap(),
        None
    );
    let listed = list_gateway_tokens(&mut c, a.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].gateway_id, Some(g));
    assert_eq!(listed[0].used_at, Some(now()));
}

async fn gateways_are_found_by_credential(s: &Store) {
    let a = site(s, "hq").await;
    let mut c = s.conn().await.unwrap();
    let g = Gateway {
        id: GatewayId::new(),
        site_id: a.id,
        name: "gw-1".into(),
        public_key: None,
        endpoint: Some("192.0.2.1:51820".into()),
        disabled: false,
        online: false,
        last_seen_at: None,
        created_at: now(),
    };
    insert_gateway(&mut c, &g, "cred-hash").await.unwrap();
    assert_eq!(
        gateway_by_credential(&mut c, "cred-hash").await.unwrap(),
        Some(g.clone())
    );
    assert_eq!(gateway_by_credential(&mut c, "other").await.unwrap(), None);
    let same_name = Gateway {
        id: GatewayId::new(),
        ..g.clone()
    };
    assert!(matches!(
        insert_gateway(&mut c, &same_name, "cred-2").await,
        Err(StoreError::Duplicate(_))
    ));
    let changed = Gateway {
        disabled: true,
        public_key: Some("pk".into()),
        last_seen_at: Some(now()),
        ..g.clone()
    };
    update_gateway(&mut c, &changed).await.unwrap();
    assert_eq!(get_gateway(&mut c, g.id).await.unwrap(), Some(changed));
    assert_eq!(
        list_gateways(&mut c, Some(SiteId::new())).await.unwrap(),
        vec![]
    );
    assert!(delete_gateway(&mut c, g.id).await.unwrap());
}

async fn resources_keep_addresses_and_ports(s: &Store) {
    let a = site(s, "hq").await;
    let r = resource(s, a.id, "db").await;
    let mut c = s.conn().await.unwrap();
    assert_eq!(get_resource(&mut c, r.id).await.unwrap(), Some(r.clone()));
    let changed = Resource {
        ports: vec![],
        addresses: vec![parse_address("10.9.0.0/16").unwrap()],
        ..r.clone()
    };
    update_resource(&mut c, &changed).await.unwrap();
    assert_eq!(
        list_resources(&mut c, Some(a.id)).await.unwrap(),
        vec![changed]
    );
    assert!(matches!(
        insert_resource(
            &mut c,
            &Resource {
                id: ResourceId::new(),
                ..r.clone()
            }
        )
        .await,
        Err(StoreError::Duplicate(_))
    ));
}

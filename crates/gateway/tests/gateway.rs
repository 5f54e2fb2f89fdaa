//! The gateway against real upstream servers on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use neocloud_gateway::{ApiKeys, GatewayConfig, RoutingTable, ServiceRoute, VersionRoute};

#[tokio::test]
async fn routes_by_model_name() {
    let (a, b) = (
        Upstream::start("a", Behaviour::Answer).await,
        Upstream::start("b", Behaviour::Answer).await,
    );
    let t = table(&[("alpha", vec![a.endpoint()]), ("beta", vec![b.endpoint()])]);
    let (_gw, addr) = gateway(GatewayConfig::default(), t).await;
    let client = TestClient::new(addr);
    for _ in 0..3 {
        assert_eq!(client.embed("alpha").await.body["served_by"], "a");
        assert_eq!(client.embed("beta").await.body["served_by"], "b");
    }
    // KServe: the model is in the path.
    let answer = client
        .call("POST", "/v2/models/beta/infer", r#"{"inputs":[]}"#, &[])
        .await;
    assert_eq!(answer.body["served_by"], "b");
    let answer = client.call("GET", "/v2/models/alpha", "", &[]).await;
    assert_eq!(answer.body["served_by"], "a");
}

#[tokio::test]
async fn versions_share_traffic_by_weight() {
    let (stable, canary) = (
        Upstream::start("stable", Behaviour::Answer).await,
        Upstream::start("canary", Behaviour::Answer).await,
    );
    let mut t = RoutingTable::default();
    t.services.insert(
        "svc".into(),
        ServiceRoute {
            versions: vec![
                VersionRoute {
                    name: "v1".into(),
                    weight: 3,
                    endpoints: vec![stable.endpoint()],
                },
                VersionRoute {
                    name: "v2".into(),
                    weight: 1,
                    endpoints: vec![canary.endpoint()],
                },
            ],
            ..ServiceRoute::default()
        },
    );
    let (_gw, addr) = gateway(GatewayConfig::default(), t).await;
    let client = TestClient::new(addr);
    let n = 400;
    for _ in 0..n {
        assert_eq!(client.embed("svc").await.status, StatusCode::OK);
    }
    // Expected 100 of 400 (sd 8.7); the bounds are 4.6 sd away.
    let to_canary = canary.hits.load(Ordering::SeqCst);
    assert!(
        (60..=140).contains(&to_canary),
        "canary got {to_canary} of {n}"
    );
    assert_eq!(stable.hits.load(Ordering::SeqCst) + to_canary, n);
}

#[tokio::test]
async fn two_choices_avoid_the_busy_endpoint() {
    let (busy, idle) = (
        Upstream::start("busy", Behaviour::Hang).await,
        Upstream::start("idle", Behaviour::Answer).await,
    );
    let t = table(&[("svc", vec![busy.endpoint(), idle.endpoint()])]);
    let (_gw, addr) = gateway(GatewayConfig::default(), t).await;
    let client = TestClient::new(addr);
    // Park one request on the busy endpoint (others land on the idle one
    // and return at once).
    while busy.active.load(Ordering::SeqCst) == 0 {
        let c = client.clone();
        let pending = tokio::spawn(async move { c.embed("svc").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        if pending.is_finished() {
            continue;
        }
        wait_until("the parked request reaches the busy endpoint", || {
            busy.active.load(Ordering::SeqCst) == 1
        })
        .await;
    }
    // With two endpoints both are the two choices: one outstanding request
    // is enough to send everything else to the other.
    for _ in 0..20 {
        assert_eq!(client.embed("svc").await.body["served_by"], "idle");
    }
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_endpoint() {
    let live = Upstream::start("live", Behaviour::Answer).await;
    let dead = neocloud_gateway::Endpoint {
        id: "dead".into(),
        addr: dead_addr().await,
    };
    let t = table(&[("svc", vec![dead, live.endpoint()])]);
    let (_gw, addr) = gateway(GatewayConfig::default(), t).await;
    let client = TestClient::new(addr);
    for _ in 0..20 {
        let answer = client.embed("svc").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["served_by"], "live");
    }
}

#[tokio::test]
async fn all_endpoints_dead_is_a_502() {
    let dead = neocloud_gateway::Endpoint {
        id: "dead".into(),
        addr: dead_addr().await,
    };
    let (_gw, addr) = gateway(GatewayConfig::default(), table(&[("svc", vec![dead])])).await;
    let answer = TestClient::new(addr).embed("svc").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.headers.contains_key("retry-after"));
    assert!(answer.text.contains("svc"), "{}", answer.text);
}

#[tokio::test]
async fn failing_endpoints_are_ejected_and_come_back_after_the_cool_off() {
    let (bad, good) = (
        Upstream::start("bad", Behaviour::Fail).await,
        Upstream::start("good", Behaviour::Answer).await,
    );
    let config = GatewayConfig {
        eject_after_failures: 3,
        eject_time: Duration::from_millis(300),
        ..GatewayConfig::default()
    };
    let t = table(&[("svc", vec![bad.endpoint(), good.endpoint()])]);
    let (_gw, addr) = gateway(config, t).await;
    let client = TestClient::new(addr);
    // 5xx answers pass through, and count towards ejection.
    while bad.hits.load(Ordering::SeqCst) < 3 {
        client.embed("svc").await;
    }
    for _ in 0..30 {
        assert_eq!(client.embed("svc").await.body["served_by"], "good");
    }
    assert_eq!(
        bad.hits.load(Ordering::SeqCst),
        3,
        "ejected after 3 failures"
    );

    // After the cool-off it is tried again; healthy now, it serves.
    bad.set_failing(false);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut served_by_bad = 0;
    for _ in 0..50 {
        if client.embed("svc").await.body["served_by"] == "bad" {
            served_by_bad += 1;
        }
    }
    assert!(served_by_bad > 0, "the endpoint came back");
}

#[tokio::test]
async fn the_last_endpoint_is_never_ejected_for_nothing() {
    let bad = Upstream::start("bad", Behaviour::Fail).await;
    let config = GatewayConfig {
        eject_after_failures: 1,
        ..GatewayConfig::default()
    };
    let (_gw, addr) = gateway(config, table(&[("svc", vec![bad.endpoint()])])).await;
    let client = TestClient::new(addr);
    for _ in 0..5 {
        // Still forwarded (its own 500), not refused by the gateway.
        assert_eq!(client.embed("svc").await.text, "boom");
    }
    assert_eq!(bad.hits.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn past_the_queue_bound_the_answer_is_429_with_retry_after() {
    let slow = Upstream::start("slow", Behaviour::Hang).await;
    let config = GatewayConfig {
        max_pending_per_service: 2,
        ..GatewayConfig::default()
    };
    let (gw, addr) = gateway(config, table(&[("svc", vec![slow.endpoint()])])).await;
    let client = TestClient::new(addr);
    for _ in 0..2 {
        let c = client.clone();
        tokio::spawn(async move { c.embed("svc").await });
    }
    wait_until("two requests are upstream", || {
        slow.active.load(Ordering::SeqCst) == 2
    })
    .await;
    let answer = client.embed("svc").await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(answer.body["error"]["type"], "rate_limit_error");
    assert_eq!(answer.body["error"]["code"], "queue_full");
    let stats = gw.stats()["svc"];
    assert_eq!(stats.in_flight, 2);
    assert_eq!(stats.requests_total, 3);
}

#[tokio::test]
async fn upstream_429s_pass_through_unchanged() {
    let throttled = Upstream::start("t", Behaviour::Throttle).await;
    let (_gw, addr) = gateway(
        GatewayConfig::default(),
        table(&[("svc", vec![throttled.endpoint()])]),
    )
    .await;
    let answer = TestClient::new(addr).embed("svc").await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "7");
    assert_eq!(answer.text, "slow down");
}

#[tokio::test]
async fn a_scaled_to_zero_service_is_woken_and_the_request_held_until_it_has_a_replica() {
    let (woken_tx, mut woken) = tokio::sync::mpsc::unbounded_channel::<String>();
    let activator = Arc::new(move |service: &str| {
        let _ = woken_tx.send(service.to_string());
    });
    let (gw, addr) = gateway_with(
        GatewayConfig::default(),
        table(&[("svc", vec![])]),
        activator,
        None,
    )
    .await;
    let client = TestClient::new(addr);
    let held = tokio::spawn(async move { client.embed("svc").await });
    assert_eq!(woken.recv().await.as_deref(), Some("svc"));
    assert_eq!(gw.stats()["svc"].in_flight, 1, "held requests count");

    let replica = Upstream::start("r0", Behaviour::Answer).await;
    gw.set_table(table(&[("svc", vec![replica.endpoint()])]));
    let answer = held.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["served_by"], "r0");
    wait_until("the request is no longer in flight", || {
        gw.stats()["svc"].in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn a_service_that_stays_at_zero_answers_503_after_the_bounded_wait() {
    let config = GatewayConfig {
        activation_timeout: Duration::from_millis(200),
        ..GatewayConfig::default()
    };
    let (gw, addr) = gateway(config, table(&[("svc", vec![])])).await;
    let answer = TestClient::new(addr).embed("svc").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.contains_key("retry-after"));
    assert_eq!(gw.stats()["svc"].in_flight, 0);
}

#[tokio::test]
async fn streamed_answers_arrive_chunk_by_chunk_and_a_gone_client_drops_the_upstream() {
    let (upstream, mut streams) = streaming_upstream().await;
    let mut t = table(&[(
        "llm",
        vec![neocloud_gateway::Endpoint {
            id: "llm/0".into(),
            addr: upstream,
        }],
    )]);
    t.services.get_mut("llm").unwrap().generation = true;
    let (gw, addr) = gateway(GatewayConfig::default(), t).await;
    let client = TestClient::new(addr);
    let body = r#"{"model":"llm","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let response = client.send("POST", "/v1/chat/completions", body, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut sender = streams.recv().await.unwrap();
    let mut body = response.into_body();
    for i in 0..3 {
        // Each chunk reaches the client before the next one exists.
        let chunk = format!("data: {{\"n\":{i}}}\n\n");
        sender.send_data(Bytes::from(chunk.clone())).await.unwrap();
        assert_eq!(next_chunk(&mut body).await.unwrap(), chunk.as_bytes());
    }
    assert_eq!(gw.stats()["llm"].in_flight, 1);

    // The client goes away: the upstream request is dropped too.
    drop(body);
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while sender
            .send_data(Bytes::from_static(b": ping\n\n"))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the upstream stream was not dropped");
    wait_until("the stream is no longer in flight", || {
        gw.stats()["llm"].in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn api_keys_gate_requests_by_service() {
    let (a, b) = (
        Upstream::start("a", Behaviour::Answer).await,
        Upstream::start("b", Behaviour::Answer).await,
    );
    let keys = ApiKeys::parse(
        "- name: all\n  key: k-all\n- name: only-a\n  key: k-a\n  services: [alpha]\n",
    )
    .unwrap();
    let t = table(&[("alpha", vec![a.endpoint()]), ("beta", vec![b.endpoint()])]);
    let (_gw, addr) = gateway_with(
        GatewayConfig::default(),
        t,
        Arc::new(neocloud_gateway::NoActivator),
        Some(keys),
    )
    .await;
    let client = TestClient::new(addr);
    let body = |model: &str| format!(r#"{{"model":"{model}","input":"hi"}}"#);
    let post = |model: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let client = client.clone();
        let body = body(model);
        async move { client.call("POST", "/v1/embeddings", &body, headers).await }
    };

    let none = post("alpha", &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["error"]["code"], "invalid_api_key");
    let wrong = post("alpha", &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let forbidden = post("beta", &[("authorization", "Bearer k-a")]).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert!(forbidden.text.contains("beta"), "{}", forbidden.text);
    assert_eq!(
        post("alpha", &[("authorization", "Bearer k-a")])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        post("beta", &[("api-key", "k-all")]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post("beta", &[("x-api-key", "k-all")]).await.status,
        StatusCode::OK
    );

    // Probes stay open; the model list shows what the key may use.
    assert_eq!(
        client.call("GET", "/health", "", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        client.call("GET", "/v2/health/ready", "", &[]).await.status,
        StatusCode::OK
    );
    let models = client
        .call("GET", "/v1/models", "", &[("authorization", "Bearer k-a")])
        .await;
    assert_eq!(models.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(models.body["data"][0]["id"], "alpha");
    // KServe paths get KServe's error shape.
    let kserve = client
        .call("POST", "/v2/models/alpha/infer", "{}", &[])
        .await;
    assert_eq!(kserve.status, StatusCode::UNAUTHORIZED);
    assert!(kserve.body["error"].is_string());
}

#[tokio::test]
async fn unknown_models_are_404_and_bad_bodies_400() {
    let a = Upstream::start("a", Behaviour::Answer).await;
    let t = table(&[("alpha", vec![a.endpoint()]), ("gamma", vec![])]);
    let (_gw, addr) = gateway(GatewayConfig::default(), t).await;
    let client = TestClient::new(addr);

    let unknown = client.embed("nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["code"], "model_not_found");
    let message = unknown.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'nope'") && message.contains("alpha, gamma"),
        "{message}"
    );
    let kserve = client
        .call("POST", "/v2/models/nope/infer", "{}", &[])
        .await;
    assert_eq!(kserve.status, StatusCode::NOT_FOUND);
    assert!(kserve.body["error"].as_str().unwrap().contains("nope"));

    for (body, expect) in [
        ("", "empty"),
        ("{\"model\": ", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (r#"{"input":"hi"}"#, "\"model\""),
        (r#"{"model":7,"input":"hi"}"#, "must be a string"),
    ] {
        let answer = client.call("POST", "/v1/embeddings", body, &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expect), "{body:?}: {message}");
        assert_eq!(answer.body["error"]["type"], "invalid_request_error");
    }

    let models = client.call("GET", "/v1/models", "", &[]).await;
    assert_eq!(models.body["object"], "list");
    let ids: Vec<_> = models.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["alpha", "gamma"]);
}

#[tokio::test]
async fn endpoint_state_survives_a_table_swap() {
    let (bad, good) = (
        Upstream::start("bad", Behaviour::Fail).await,
        Upstream::start("good", Behaviour::Answer).await,
    );
    let config = GatewayConfig {
        eject_after_failures: 2,
        eject_time: Duration::from_secs(60),
        ..GatewayConfig::default()
    };
    let t = table(&[("svc", vec![bad.endpoint(), good.endpoint()])]);
    let (gw, addr) = gateway(config, t.clone()).await;
    let client = TestClient::new(addr);
    while bad.hits.load(Ordering::SeqCst) < 2 {
        client.embed("svc").await;
    }
    // Same endpoints under a new table (another service added): still ejected.
    let mut t2 = t;
    t2.services.insert(
        "other".into(),
        table(&[("x", vec![])]).services["x"].clone(),
    );
    gw.set_table(t2);
    for _ in 0..20 {
        assert_eq!(client.embed("svc").await.body["served_by"], "good");
    }
    assert_eq!(bad.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let a = Upstream::start("a", Behaviour::Answer).await;
    let (_gw, addr) = gateway(
        GatewayConfig::default(),
        table(&[("svc", vec![a.endpoint()])]),
    )
    .await;
    let client = TestClient::new(addr);
    for _ in 0..50 {
        assert_eq!(client.embed("svc").await.status, StatusCode::OK);
    }
    assert_eq!(a.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_replaced_not_blamed() {
    let closing = neocloud_gateway::Endpoint {
        id: "closing".into(),
        addr: closing_upstream().await,
    };
    let config = GatewayConfig {
        eject_after_failures: 1,
        ..GatewayConfig::default()
    };
    let (_gw, addr) = gateway(config, table(&[("svc", vec![closing])])).await;
    let client = TestClient::new(addr);
    for _ in 0..5 {
        let answer = client.embed("svc").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["served_by"], "c");
        // Let the idle connection die in the pool.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test]
async fn bodies_past_the_limit_are_413() {
    let a = Upstream::start("a", Behaviour::Answer).await;
    let config = GatewayConfig {
        max_body_bytes: 64,
        ..GatewayConfig::default()
    };
    let (_gw, addr) = gateway(config, table(&[("alpha", vec![a.endpoint()])])).await;
    let body = format!(r#"{{"model":"alpha","input":"{}"}}"#, "x".repeat(100));
    let answer = TestClient::new(addr)
        .call("POST", "/v1/embeddings", &body, &[])
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.body["error"]["code"], "payload_too_large");
    assert_eq!(a.hits.load(Ordering::SeqCst), 0);
}

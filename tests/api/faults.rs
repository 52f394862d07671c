//! A database outage: the server reports it, refuses writes with a code the client can retry
//! on, keeps answering from memory what needs no database, and heals by itself when the
//! database returns, with nothing committed before the outage lost.
//!
//! The outage is a loopback TCP relay in front of the real PostgreSQL that the test cuts:
//! open connections die and new ones are refused, as when the database host goes away.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{Backend, TestApp, eventually};

const PICKUP: (f64, f64) = (41.1579, -8.6291);

/// A relay from a loopback port to `target` that can be cut and restored.
struct Relay {
    port: u16,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio::spawn({
            let open = open.clone();
            let connections = connections.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropping the socket refuses the connection
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().push(relay);
                }
            }
        });
        Relay {
            port,
            open,
            connections,
            acceptor,
        }
    }

    /// Kills every relayed connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.acceptor.abort();
    }
}

async fn readyz(app: &TestApp) -> (u16, serde_json::Value) {
    let response = reqwest::get(app.url("/readyz")).await.expect("GET /readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

const RIDER_TRIPS: &str = "query($r: ID!) { trips(filter: { riderId: $r }) { id status } }";

/// Returns where the test PostgreSQL listens, from the URL the other tests use.
fn postgres_addr() -> SocketAddr {
    let admin = std::env::var("MOBILITY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let url = url::Url::parse(&admin).expect("MOBILITY_TEST_POSTGRES_URL is a URL");
    let host = url.host_str().expect("a host");
    format!("{host}:{}", url.port().unwrap_or(5432))
        .parse()
        .expect("the test PostgreSQL has a numeric loopback address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_is_reported_refused_cleanly_and_healed() {
    let relay = Relay::start(postgres_addr()).await;
    let port = relay.port;
    let app = TestApp::spawn_with(Backend::Postgres, |config| {
        let mut url = url::Url::parse(&config.database_url).expect("database URL");
        url.set_port(Some(port)).expect("a URL with a port");
        config.database_url = url.to_string();
        config.db_max_connections = 2;
    })
    .await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", PICKUP.0, PICKUP.1).await;
    let before = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;

    relay.cut();
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "unreachable", "{body}");

    // A write fails with a retryable code, not a generic 500.
    let refused = app
        .gql(
            "mutation($input: RequestTripInput!) { requestTrip(input: $input) { id } }",
            json!({ "input": {
                "riderId": rider,
                "pickup": { "lat": PICKUP.0, "lng": PICKUP.1 },
                "vehicleType": "MOTO",
            } }),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{refused}"
    );
    // Matching needs no database and keeps working. The profile, read from the database,
    // fails with the same retryable code.
    let nearby = app
        .gql(
            "query($n: LatLngInput!) { nearbyDrivers(near: $n) { drivers { driverId \
             driver { name } } } }",
            json!({ "n": { "lat": PICKUP.0, "lng": PICKUP.1 } }),
        )
        .await;
    assert_eq!(
        nearby["data"]["nearbyDrivers"]["drivers"][0]["driverId"],
        driver.as_str(),
        "{nearby}"
    );
    assert_eq!(
        nearby["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{nearby}"
    );

    relay.restore();
    eventually("the server to be ready again", || async {
        (readyz(&app).await.0 == 200).then_some(())
    })
    .await;
    let after = app.request_trip(&rider, "MOTO", PICKUP.0, PICKUP.1).await;
    let trips = app.ok(RIDER_TRIPS, json!({ "r": rider })).await;
    let mut ids: Vec<&str> = trips["trips"]
        .as_array()
        .expect("trips is a list")
        .iter()
        .map(|trip| trip["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![before.as_str(), after.as_str()];
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "the trip from before the outage is kept, the refused one absent"
    );
    app.stop().await;
}

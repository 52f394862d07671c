//! Bad input everywhere: coordinates out of range, swapped or at Null Island, values of the
//! wrong type, NaN and huge numbers, unknown enum values, invalid phones, names and plates,
//! duplicates, unknown and malformed ids, and malformed HTTP and GraphQL requests. Every
//! rejection must carry `extensions.code` and store nothing. Also checks the GET transport,
//! `/healthz` and the GraphiQL page.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, unique};

crate::on_both_backends!(
    coordinate_ranges,
    swapped_pairs,
    null_island,
    float_values,
    enum_values,
    phone_numbers,
    duplicates,
    names_and_plates,
    unknown_ids,
    query_errors,
    http_transport,
    health_and_graphiql,
);

/// A point in Porto, inside the service area used by [`swapped_pairs`].
const PORTO: (f64, f64) = (41.1579, -8.6291);

/// Porto's service area as `min_lat,min_lng,max_lat,max_lng`.
const PORTO_AREA: &str = "41.0,-8.8,41.4,-8.4";

const NEARBY: &str =
    "query($n: LatLngInput!) { nearbyDrivers(near: $n) { radiusMeters drivers { rank } } }";

const REQUEST_TRIP: &str =
    "mutation($input: RequestTripInput!) { requestTrip(input: $input) { id status } }";

const GO_ONLINE: &str =
    "mutation($d: ID!, $l: LocationInput) { goOnline(driverId: $d, location: $l) { id } }";

const REGISTER_RIDER: &str =
    "mutation($input: RegisterRiderInput!) { registerRider(input: $input) { id name phone } }";

const REGISTER_DRIVER: &str = "mutation($input: RegisterDriverInput!) \
    { registerDriver(input: $input) { id name phone vehicle { type plate description } } }";

fn point(p: (f64, f64)) -> Value {
    json!({ "lat": p.0, "lng": p.1 })
}

fn trip_input(rider: &str, pickup: Value, dropoff: Option<Value>) -> Value {
    json!({ "input": {
        "riderId": rider,
        "pickup": pickup,
        "dropoff": dropoff,
        "vehicleType": "MOTO",
    } })
}

/// Ids of every stored trip, newest first.
async fn trip_ids(app: &TestApp) -> Vec<Value> {
    let data = app.ok("{ trips(limit: 100) { id } }", json!({})).await;
    data["trips"].as_array().unwrap().clone()
}

/// Ids of every stored driver.
async fn driver_ids(app: &TestApp) -> Vec<Value> {
    let data = app.ok("{ drivers(limit: 100) { id } }", json!({})).await;
    data["drivers"].as_array().unwrap().clone()
}

/// Presence location of a driver; null before the first accepted fix.
async fn driver_location(app: &TestApp, driver: &str) -> Value {
    let data = app
        .ok(
            "query($d: ID!) { driver(id: $d) { presence { location { lat lng } } } }",
            json!({ "d": driver }),
        )
        .await;
    data["driver"]["presence"]["location"].clone()
}

/// Sends `query` and checks the error's code and `extensions.field`; returns the message.
async fn expect_field(app: &TestApp, query: &str, variables: Value, field: &str) -> String {
    let error = app.err(query, variables.clone(), "BAD_USER_INPUT").await;
    assert_eq!(
        error["extensions"]["field"], field,
        "variables {variables}: {error}"
    );
    error["message"].as_str().unwrap_or_default().to_owned()
}

async fn coordinate_ranges(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.driver("MOTO").await;

    let nearby_cases = [
        (json!({ "lat": 91.0, "lng": PORTO.1 }), "near.lat"),
        (json!({ "lat": -90.5, "lng": PORTO.1 }), "near.lat"),
        (json!({ "lat": PORTO.0, "lng": 181.0 }), "near.lng"),
        (json!({ "lat": PORTO.0, "lng": -180.01 }), "near.lng"),
        (json!({ "lat": 1e308, "lng": PORTO.1 }), "near.lat"),
        (json!({ "lat": PORTO.0, "lng": -1e308 }), "near.lng"),
    ];
    for (near, field) in nearby_cases {
        let message = expect_field(&app, NEARBY, json!({ "n": near }), field).await;
        assert!(message.contains("outside"), "{near}: {message}");
    }

    let trip_cases = [
        (point((PORTO.0, 181.0)), None, "input.pickup.lng"),
        (point((-91.0, PORTO.1)), None, "input.pickup.lat"),
        (point((PORTO.0, -1e308)), None, "input.pickup.lng"),
        (
            point(PORTO),
            Some(point((95.0, PORTO.1))),
            "input.dropoff.lat",
        ),
        (
            point(PORTO),
            Some(point((PORTO.0, 200.0))),
            "input.dropoff.lng",
        ),
    ];
    for (pickup, dropoff, field) in trip_cases {
        expect_field(
            &app,
            REQUEST_TRIP,
            trip_input(&rider, pickup, dropoff),
            field,
        )
        .await;
    }
    assert_eq!(trip_ids(&app).await, Vec::<Value>::new(), "no trip stored");

    for (location, field) in [
        (point((100.0, PORTO.1)), "location.lat"),
        (point((PORTO.0, -200.0)), "location.lng"),
    ] {
        expect_field(
            &app,
            GO_ONLINE,
            json!({ "d": driver, "l": location }),
            field,
        )
        .await;
    }
    let data = app
        .ok(
            "query($d: ID!) { driver(id: $d) { presence { online } } }",
            json!({ "d": driver }),
        )
        .await;
    assert_eq!(
        data["driver"]["presence"]["online"], false,
        "a rejected goOnline leaves the driver offline: {data}"
    );
    app.stop().await;
}

async fn swapped_pairs(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.service_area = Some(PORTO_AREA.parse().unwrap());
    })
    .await;
    let rider = app.rider().await;
    let driver = app.driver("CAB").await;
    let swapped = point((PORTO.1, PORTO.0));

    let message = expect_field(
        &app,
        REQUEST_TRIP,
        trip_input(&rider, swapped.clone(), None),
        "input.pickup",
    )
    .await;
    assert!(message.contains("swapped"), "pickup: {message}");
    let message = expect_field(
        &app,
        REQUEST_TRIP,
        trip_input(&rider, point(PORTO), Some(swapped.clone())),
        "input.dropoff",
    )
    .await;
    assert!(message.contains("swapped"), "dropoff: {message}");
    let message = expect_field(&app, NEARBY, json!({ "n": swapped }), "near").await;
    assert!(message.contains("swapped"), "near: {message}");
    let message = expect_field(
        &app,
        GO_ONLINE,
        json!({ "d": driver, "l": swapped }),
        "location",
    )
    .await;
    assert!(message.contains("swapped"), "location: {message}");
    assert_eq!(trip_ids(&app).await, Vec::<Value>::new(), "no trip stored");
    assert!(driver_location(&app, &driver).await.is_null());

    // Lisbon is outside the area, and swapping does not bring it in.
    let lisbon = point((38.7223, -9.1393));
    let message = expect_field(
        &app,
        REQUEST_TRIP,
        trip_input(&rider, lisbon, None),
        "input.pickup",
    )
    .await;
    assert!(message.contains("service area"), "{message}");
    assert!(!message.contains("swapped"), "no swap hint: {message}");

    // The right order is accepted.
    let data = app
        .ok(REQUEST_TRIP, trip_input(&rider, point(PORTO), None))
        .await;
    assert_eq!(data["requestTrip"]["status"], "REQUESTED", "{data}");
    app.ok(GO_ONLINE, json!({ "d": driver, "l": point(PORTO) }))
        .await;
    app.stop().await;

    // Without a service area, a latitude out of range hints at a swap only when the swapped
    // pair is valid.
    let app = TestApp::spawn(backend).await;
    let message = expect_field(
        &app,
        NEARBY,
        json!({ "n": point((120.0, 45.0)) }),
        "near.lat",
    )
    .await;
    assert!(message.contains("swapped"), "(120, 45): {message}");
    for near in [(200.0, 10.0), (1e308, 1.0), (95.0, -100.0)] {
        let message = expect_field(&app, NEARBY, json!({ "n": point(near) }), "near.lat").await;
        assert!(
            !message.contains("swapped"),
            "{near:?} swapped is invalid too, so no swap hint: {message}"
        );
    }
    app.stop().await;
}

async fn null_island(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.driver("MOTO").await;
    let zero = point((0.0, 0.0));

    let message = expect_field(
        &app,
        REQUEST_TRIP,
        trip_input(&rider, zero.clone(), None),
        "input.pickup",
    )
    .await;
    assert!(message.contains("Null Island"), "{message}");
    let message = expect_field(&app, NEARBY, json!({ "n": zero }), "near").await;
    assert!(message.contains("Null Island"), "{message}");
    let message = expect_field(
        &app,
        GO_ONLINE,
        json!({ "d": driver, "l": zero }),
        "location",
    )
    .await;
    assert!(message.contains("Null Island"), "{message}");
    app.ok(GO_ONLINE, json!({ "d": driver })).await;
    let body = app.update_location(&driver, point((0.0, 0.0))).await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "location",
        "{body}"
    );
    assert_eq!(trip_ids(&app).await, Vec::<Value>::new(), "no trip stored");
    assert!(driver_location(&app, &driver).await.is_null());

    // Near Null Island but not on it: the equator and the prime meridian are real places.
    app.ok(NEARBY, json!({ "n": point((0.0, 0.5)) })).await;
    app.ok(NEARBY, json!({ "n": point((0.5, 0.0)) })).await;
    app.stop().await;
}

async fn float_values(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;

    // A Float that is not a number fails validation, before any resolver runs, so the error
    // has no `field`; the message names the argument path.
    for lat in [
        json!("abc"),
        json!("NaN"),
        json!("Infinity"),
        json!("-Infinity"),
        json!(true),
    ] {
        let near = json!({ "lat": lat, "lng": PORTO.1 });
        let error = app
            .err(NEARBY, json!({ "n": near }), "GRAPHQL_VALIDATION_FAILED")
            .await;
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("near.lat"), "{near}: {error}");

        let pickup = json!({ "lat": PORTO.0, "lng": lat });
        let error = app
            .err(
                REQUEST_TRIP,
                trip_input(&rider, pickup.clone(), None),
                "GRAPHQL_VALIDATION_FAILED",
            )
            .await;
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("pickup.lng"), "{pickup}: {error}");
    }
    let error = app
        .err(
            "{ nearbyDrivers(near: {lat: \"abc\", lng: 1.0}) { radiusMeters } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        )
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("near.lat"),
        "{error}"
    );
    let error = app
        .err(
            NEARBY,
            json!({ "n": { "lat": PORTO.0 } }),
            "GRAPHQL_VALIDATION_FAILED",
        )
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("lng"),
        "missing lng: {error}"
    );
    // An Int argument out of the 32-bit range fails when the resolver reads it.
    app.err(
        "{ nearbyDrivers(near: {lat: 41.1, lng: -8.6}, limit: 2147483648) { radiusMeters } }",
        json!({}),
        "BAD_USER_INPUT",
    )
    .await;

    // JSON has no NaN or Infinity, and 1e400 overflows f64: the body itself is rejected.
    let client = crate::helpers::client();
    for number in ["NaN", "Infinity", "1e400"] {
        let body = format!(
            "{{\"query\": {}, \"variables\": {{\"n\": {{\"lat\": {number}, \"lng\": 1.0}}}}}}",
            json!(NEARBY)
        );
        let response = client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /graphql");
        let status = response.status();
        assert!(status.is_client_error(), "{number}: HTTP {status}");
    }
    assert_eq!(trip_ids(&app).await, Vec::<Value>::new(), "no trip stored");
    app.stop().await;
}

async fn enum_values(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;

    for vehicle_type in ["BUS", "moto", "", "1"] {
        let mut input = trip_input(&rider, point(PORTO), None);
        input["input"]["vehicleType"] = json!(vehicle_type);
        let error = app
            .err(REQUEST_TRIP, input, "GRAPHQL_VALIDATION_FAILED")
            .await;
        assert!(
            error["message"].as_str().unwrap().contains("VehicleType"),
            "{vehicle_type:?}: {error}"
        );

        let input = json!({
            "name": "Aline",
            "phone": format!("+2507{:08}", unique()),
            "vehicle": { "type": vehicle_type, "plate": "RAB123C" },
        });
        app.err(
            REGISTER_DRIVER,
            json!({ "input": input }),
            "GRAPHQL_VALIDATION_FAILED",
        )
        .await;
    }
    app.err(
        "{ nearbyDrivers(near: {lat: 41.1, lng: -8.6}, vehicleTypes: [BUS]) { radiusMeters } }",
        json!({}),
        "GRAPHQL_VALIDATION_FAILED",
    )
    .await;
    assert_eq!(trip_ids(&app).await, Vec::<Value>::new(), "no trip stored");
    assert_eq!(
        driver_ids(&app).await,
        Vec::<Value>::new(),
        "no driver stored"
    );
    app.stop().await;
}

async fn phone_numbers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bad = [
        "250788123456",
        "+25078812345a",
        "+2507881x3456",
        "+12345",
        "+1234567890123456",
        "+0788123456",
        "",
        "++250788123456",
        "+250 788 123 456 789 0",
    ];
    for phone in bad {
        let input = json!({ "name": "Aline", "phone": phone });
        expect_field(
            &app,
            REGISTER_RIDER,
            json!({ "input": input }),
            "input.phone",
        )
        .await;
        let input = json!({
            "name": "Aline",
            "phone": phone,
            "vehicle": { "type": "MOTO", "plate": format!("PH{}", unique()) },
        });
        expect_field(
            &app,
            REGISTER_DRIVER,
            json!({ "input": input }),
            "input.phone",
        )
        .await;
    }
    assert_eq!(
        driver_ids(&app).await,
        Vec::<Value>::new(),
        "no driver stored"
    );
    // Ids start at 1, so a stored rider would be rider 1.
    let data = app.ok("{ rider(id: \"1\") { id } }", json!({})).await;
    assert!(data["rider"].is_null(), "no rider stored: {data}");

    // Spaces, dashes, dots and brackets are removed.
    let input = json!({ "name": "Aline", "phone": "+250 (788) 123-45.6" });
    let data = app.ok(REGISTER_RIDER, json!({ "input": input })).await;
    assert_eq!(data["registerRider"]["phone"], "+250788123456", "{data}");
    let input = json!({ "name": "Aline", "phone": "+1234567" });
    app.ok(REGISTER_RIDER, json!({ "input": input })).await;
    let input = json!({ "name": "Aline", "phone": "+123456789012345" });
    app.ok(REGISTER_RIDER, json!({ "input": input })).await;

    // Look-ups by phone check the format too.
    let error = app
        .err(
            "{ riderByPhone(phone: \"0788\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "phone", "{error}");
    app.stop().await;
}

async fn duplicates(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let input = json!({ "name": "First", "phone": "+250788123456" });
    let data = app.ok(REGISTER_RIDER, json!({ "input": input })).await;
    let rider = data["registerRider"]["id"].clone();
    let input = json!({ "name": "Second", "phone": "+250 788 123 456" });
    let error = app
        .err(REGISTER_RIDER, json!({ "input": input }), "CONFLICT")
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("phone"),
        "{error}"
    );
    let data = app
        .ok(
            "{ riderByPhone(phone: \"+250788123456\") { id name } }",
            json!({}),
        )
        .await;
    assert_eq!(data["riderByPhone"]["id"], rider, "{data}");
    assert_eq!(data["riderByPhone"]["name"], "First", "{data}");

    let driver = |name: &str, phone: &str, plate: &str| {
        json!({ "input": {
            "name": name,
            "phone": phone,
            "vehicle": { "type": "CAB", "plate": plate },
        } })
    };
    let data = app
        .ok(
            REGISTER_DRIVER,
            driver("First", "+351912345678", "AA-00-BB"),
        )
        .await;
    assert_eq!(
        data["registerDriver"]["vehicle"]["plate"], "AA00BB",
        "{data}"
    );

    let error = app
        .err(
            REGISTER_DRIVER,
            driver("Second", "+351912345678", "CC11DD"),
            "CONFLICT",
        )
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("phone"),
        "{error}"
    );
    for plate in ["AA00BB", "aa 00 bb", "aa-00-bb"] {
        let error = app
            .err(
                REGISTER_DRIVER,
                driver("Third", &format!("+35191{:07}", unique()), plate),
                "CONFLICT",
            )
            .await;
        assert!(
            error["message"].as_str().unwrap().contains("plate"),
            "{plate}: {error}"
        );
    }
    assert_eq!(driver_ids(&app).await.len(), 1, "one driver stored");

    // The vehicle of the rejected driver was rolled back, so its plate is still free.
    let data = app
        .ok(REGISTER_DRIVER, driver("Fourth", "+351912345679", "CC11DD"))
        .await;
    assert_eq!(
        data["registerDriver"]["vehicle"]["plate"], "CC11DD",
        "{data}"
    );
    assert_eq!(driver_ids(&app).await.len(), 2, "two drivers stored");
    app.stop().await;
}

async fn names_and_plates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = |name: &str, plate: &str, description: Option<String>| {
        json!({ "input": {
            "name": name,
            "phone": format!("+2507{:08}", unique()),
            "vehicle": { "type": "MOTO", "plate": plate, "description": description },
        } })
    };
    let long_name = "x".repeat(101);
    for name in ["", "   ", long_name.as_str(), "Al\u{7}ine", "Al\nine"] {
        let input = json!({ "name": name, "phone": format!("+2507{:08}", unique()) });
        expect_field(
            &app,
            REGISTER_RIDER,
            json!({ "input": input }),
            "input.name",
        )
        .await;
        expect_field(
            &app,
            REGISTER_DRIVER,
            driver(name, "RAB123C", None),
            "input.name",
        )
        .await;
    }
    for plate in ["", "  -  ", "AB#12", "RAB/123", &"A".repeat(21)] {
        expect_field(
            &app,
            REGISTER_DRIVER,
            driver("Aline", plate, None),
            "input.vehicle.plate",
        )
        .await;
    }
    expect_field(
        &app,
        REGISTER_DRIVER,
        driver("Aline", "RAB123C", Some("y".repeat(101))),
        "input.vehicle.description",
    )
    .await;
    assert_eq!(
        driver_ids(&app).await,
        Vec::<Value>::new(),
        "no driver stored"
    );
    let data = app.ok("{ rider(id: \"1\") { id } }", json!({})).await;
    assert!(data["rider"].is_null(), "no rider stored: {data}");

    // 100 characters after trimming is the longest name accepted.
    let name = "é".repeat(100);
    let input = json!({ "name": format!("  {name}  "), "phone": format!("+2507{:08}", unique()) });
    let data = app.ok(REGISTER_RIDER, json!({ "input": input })).await;
    assert_eq!(data["registerRider"]["name"], name.as_str(), "{data}");
    let data = app
        .ok(
            REGISTER_DRIVER,
            driver(&name, &"A".repeat(20), Some("z".repeat(100))),
        )
        .await;
    assert_eq!(data["registerDriver"]["name"], name.as_str(), "{data}");
    app.stop().await;
}

async fn unknown_ids(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rider = app.rider().await;
    let driver = app.online_driver("MOTO", PORTO.0, PORTO.1).await;
    let trip = app.request_trip(&rider, "MOTO", PORTO.0, PORTO.1).await;

    for entity in ["driver", "rider", "trip"] {
        let query = format!("query($id: ID!) {{ {entity}(id: $id) {{ id }} }}");
        let data = app.ok(&query, json!({ "id": "999999" })).await;
        assert!(data[entity].is_null(), "unknown {entity}: {data}");
        let data = app.ok(&query, json!({ "id": "9223372036854775807" })).await;
        assert!(data[entity].is_null(), "largest id {entity}: {data}");
        for malformed in ["abc", "0", "-1", "1.5", "", " 1", "99999999999999999999"] {
            let error = app
                .err(&query, json!({ "id": malformed }), "BAD_USER_INPUT")
                .await;
            assert_eq!(
                error["extensions"]["field"], "id",
                "{entity}(id: {malformed:?}): {error}"
            );
        }
    }
    let error = app
        .err(
            "{ trips(filter: {riderId: \"x\"}) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "filter.riderId", "{error}");
    let error = app
        .err(
            "{ drivers(after: \"x\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "after", "{error}");

    app.err(GO_ONLINE, json!({ "d": "999999" }), "NOT_FOUND")
        .await;
    app.err(
        REQUEST_TRIP,
        trip_input("999999", point(PORTO), None),
        "NOT_FOUND",
    )
    .await;
    app.err(
        REQUEST_TRIP,
        trip_input("abc", point(PORTO), None),
        "BAD_USER_INPUT",
    )
    .await;
    for step in ["acceptTrip", "arriveAtPickup", "startTrip", "completeTrip"] {
        let body = app.driver_step(step, "999999", &driver).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{step} of an unknown trip: {body}"
        );
        let body = app.driver_step(step, "abc", &driver).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{step} of a malformed trip id: {body}"
        );
        assert_eq!(body["errors"][0]["extensions"]["field"], "tripId", "{body}");
    }
    let body = app.driver_step("acceptTrip", &trip, "999999").await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "unknown driver: {body}"
    );
    assert_eq!(trip_ids(&app).await, [json!({ "id": trip })], "one trip");
    assert_eq!(app.trip_status(&trip).await, "REQUESTED");
    app.stop().await;
}

/// Builds a query `depth` fields deep: `trips`, then `offers` and `trip` in turn, then `id`.
fn nested_query(depth: usize) -> String {
    let mut fields = vec!["trips"];
    while fields.len() < depth - 1 {
        fields.push(if fields.len() % 2 == 1 {
            "offers"
        } else {
            "trip"
        });
    }
    let mut query = String::from("id");
    for field in fields.iter().rev() {
        query = format!("{field} {{ {query} }}");
    }
    format!("{{ {query} }}")
}

async fn query_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let error = app.err("query {", json!({}), "GRAPHQL_PARSE_FAILED").await;
    assert!(error["message"].is_string(), "{error}");
    app.err("{ drivers { id } ", json!({}), "GRAPHQL_PARSE_FAILED")
        .await;
    let error = app
        .err(
            "{ drivers { nope } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        )
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("nope"),
        "{error}"
    );
    // A missing variable is reported when the resolver reads it, as input.
    let error = app
        .err(
            "query($id: ID!) { driver(id: $id) { id } }",
            json!({}),
            "BAD_USER_INPUT",
        )
        .await;
    assert!(error["message"].as_str().unwrap().contains("id"), "{error}");

    // The depth limit is 12 levels.
    let body = app.gql(&nested_query(12), json!({})).await;
    assert!(body.get("errors").is_none(), "depth 12 is allowed: {body}");
    let error = app
        .err(&nested_query(13), json!({}), "GRAPHQL_VALIDATION_FAILED")
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("too deep"),
        "{error}"
    );
    app.stop().await;
}

async fn http_transport(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = app.driver("MOTO").await;
    let client = crate::helpers::client();
    let get = |params: &[(&str, &str)]| {
        let url = url::Url::parse_with_params(&app.url("/graphql"), params).unwrap();
        client.get(url.as_str()).send()
    };

    let response = get(&[("query", "{ drivers { id } }")]).await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["drivers"], json!([{ "id": driver }]), "{body}");

    let variables = json!({ "id": driver }).to_string();
    let response = get(&[
        ("query", "query($id: ID!) { driver(id: $id) { id } }"),
        ("variables", &variables),
    ])
    .await
    .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["driver"]["id"], driver.as_str(), "{body}");

    // A mutation over GET would let a link or a prefetch change state.
    let registration = "registerRider(input: {name: \"Via GET\", phone: \"+250788000111\"}) { id }";
    let mutation = format!("mutation {{ {registration} }}");
    let response = get(&[("query", &mutation)]).await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 405, "mutation over GET: {text}");
    let data = app
        .ok(
            "{ riderByPhone(phone: \"+250788000111\") { id } }",
            json!({}),
        )
        .await;
    assert!(data["riderByPhone"].is_null(), "nothing stored: {data}");

    // In a document with both, the operation name decides.
    let document = format!("query Read {{ drivers {{ id }} }} mutation Write {{ {registration} }}");
    let response = get(&[("query", &document), ("operationName", "Read")])
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["drivers"], json!([{ "id": driver }]), "{body}");
    let response = get(&[("query", &document), ("operationName", "Write")])
        .await
        .unwrap();
    assert_eq!(response.status(), 405, "named mutation over GET");
    let response = client
        .post(app.url("/graphql"))
        .json(&json!({ "query": document, "operationName": "Read" }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"]["drivers"],
        json!([{ "id": driver }]),
        "POST: {body}"
    );

    // Malformed bodies are rejected by the transport with a 4xx.
    for (content_type, body) in [
        ("application/json", "{\"query\": "),
        ("application/json", "not json"),
        ("application/json", "[1, 2]"),
    ] {
        let response = client
            .post(app.url("/graphql"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(status.is_client_error(), "{body:?}: HTTP {status}");
    }

    // A body without a query is an empty document, which does not parse.
    let response = client
        .post(app.url("/graphql"))
        .json(&json!({ "variables": {} }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED",
        "{body}"
    );

    // The body limit is 1 MiB.
    let padding = " ".repeat(2 * 1024 * 1024);
    let response = client
        .post(app.url("/graphql"))
        .json(&json!({ "query": format!("{{ drivers {{ id }} }}{padding}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "2 MiB body");
    app.stop().await;
}

async fn health_and_graphiql(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = crate::helpers::client();

    let response = client.get(app.url("/healthz")).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert_eq!(body["status"], "ok", "{body}");

    let response = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.unwrap();
    assert!(html.to_lowercase().contains("graphiql"), "{html}");
    assert!(html.contains("/graphql"), "endpoint in the page: {html}");
    assert!(
        html.contains("/graphql/ws"),
        "subscription endpoint: {html}"
    );
    app.stop().await;
}

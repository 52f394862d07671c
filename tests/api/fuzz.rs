//! Random requests against a running server: documents generated from the real schema with
//! valid and invalid arguments, mangled documents, malformed bodies, wrong content types and
//! headers, huge variables, GET requests and WebSocket messages.
//!
//! Every response must be below 500, every GraphQL error must carry `extensions.code`, the
//! server must respond to `/healthz` after every batch, and at the end the data must be
//! consistent: each trip's status is the to-status of its last event, no driver holds two
//! active trips, and each driver's `activeTripId` is its active trip.
//!
//! The run is bounded and reproducible: `MOBILITY_FUZZ_REQUESTS` requests (default
//! [`DEFAULT_REQUESTS`]) from the seed `MOBILITY_FUZZ_SEED` (default [`DEFAULT_SEED`]). The
//! test prints both with its counts, and a failure message repeats them. Requests go one at a
//! time, so a seed replays the same sequence on a fresh database; only times differ.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use async_graphql::parser::types::{BaseType, Type, TypeKind, TypeSystemDefinition};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp};

crate::on_both_backends!(random_requests);

/// Requests per backend when `MOBILITY_FUZZ_REQUESTS` is not set. They took 10 to 20 s per
/// backend in a debug build on a 2-core machine.
const DEFAULT_REQUESTS: usize = 3000;

/// Seed when `MOBILITY_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x6d6f_6269_6c69_7479;

/// Requests between two health checks.
const BATCH: usize = 100;

/// Maximum wait for one response. A server that takes longer is reported as hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum length of the path and query string of a generated GET, below the 65,534 bytes
/// that the `http` crate accepts in a URI.
const MAX_URI_BYTES: usize = 60_000;

/// Failures kept in detail for the final message; the rest are only counted.
const MAX_REPORTED_FAILURES: usize = 20;

/// Center of the generated positions (Kigali), so that valid requests find each other.
const CENTER: (f64, f64) = (-1.9441, 30.0619);

async fn random_requests(backend: Backend) {
    let requests = env_number("MOBILITY_FUZZ_REQUESTS").unwrap_or(DEFAULT_REQUESTS as u64) as usize;
    let seed = env_number("MOBILITY_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    println!("fuzz {backend:?}: MOBILITY_FUZZ_SEED={seed} MOBILITY_FUZZ_REQUESTS={requests}");

    let app = TestApp::spawn(backend).await;
    let model = Model::from_sdl(&mobility::schema::sdl());
    let mut fuzzer = Fuzzer::new(model, seed);
    let tokens = app.ok("{ apiTokens { id role } }", json!({})).await;
    for token in tokens["apiTokens"].as_array().expect("token list") {
        assert_eq!(
            token["role"], "ADMIN",
            "a fresh server has only admin tokens"
        );
        let id: i64 = token["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("token id");
        fuzzer
            .pools
            .protected
            .entry("ApiToken".into())
            .or_default()
            .insert(id);
    }
    // A fresh connection per request, because a server may close a kept-alive connection after
    // an early response such as 413, and a request racing that close would fail in the client.
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client");
    let mut report = Report::new(backend, seed, requests);
    let started = Instant::now();

    // A crash that aborts the process, such as a stack overflow, leaves no report; set
    // MOBILITY_FUZZ_TRACE=1 to print every request before it is sent.
    let trace = std::env::var_os("MOBILITY_FUZZ_TRACE").is_some();
    for index in 0..requests {
        let request = fuzzer.request();
        if trace {
            eprintln!("#{index} {}", request.describe());
        }
        let outcome = send(&http, &app, &request).await;
        report.record(index, &request, &outcome);
        if let Ok(response) = &outcome
            && let Some(body) = &response.json
        {
            fuzzer.harvest(&request, body);
        }
        if (index + 1) % BATCH == 0 {
            let problems = fuzz_websocket(&mut fuzzer, app.addr).await;
            report.websocket(index, problems);
            if !healthy(&http, &app).await {
                report.fail(
                    index,
                    "health check",
                    "GET /healthz failed after this batch",
                );
                break;
            }
        }
    }
    assert!(
        healthy(&http, &app).await,
        "{}",
        report.summary("server not healthy after the run")
    );

    for problem in consistency_problems(&http, &app.url("/graphql"), ADMIN_TOKEN).await {
        report.fail(requests, "consistency", &problem);
    }
    println!("{}", report.counts(started.elapsed()));
    assert!(
        report.failures.is_empty(),
        "{}",
        report.summary("fuzz run found failures")
    );
    app.stop().await;
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")))
}

/// SplitMix64: small, fast and good enough to drive test inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a number in `0..n`. `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Returns a number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One argument or input field of the schema.
#[derive(Debug, Clone)]
struct InputDef {
    name: String,
    ty: Type,
    has_default: bool,
}

/// One output field of the schema.
#[derive(Debug, Clone)]
struct FieldDef {
    name: String,
    args: Vec<InputDef>,
    ty: Type,
}

/// The schema as the generator needs it, parsed from the server's own SDL.
struct Model {
    objects: BTreeMap<String, Vec<FieldDef>>,
    inputs: BTreeMap<String, Vec<InputDef>>,
    enums: BTreeMap<String, Vec<String>>,
    query: String,
    mutation: String,
    subscription: String,
}

fn input_def(value: &async_graphql::parser::types::InputValueDefinition) -> InputDef {
    InputDef {
        name: value.name.node.to_string(),
        ty: value.ty.node.clone(),
        has_default: value.default_value.is_some(),
    }
}

impl Model {
    fn from_sdl(sdl: &str) -> Model {
        let document = async_graphql::parser::parse_schema(sdl).expect("the server's SDL parses");
        let mut model = Model {
            objects: BTreeMap::new(),
            inputs: BTreeMap::new(),
            enums: BTreeMap::new(),
            query: "Query".into(),
            mutation: "Mutation".into(),
            subscription: "Subscription".into(),
        };
        for definition in document.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let schema = schema.node;
                    if let Some(name) = schema.query {
                        model.query = name.node.to_string();
                    }
                    if let Some(name) = schema.mutation {
                        model.mutation = name.node.to_string();
                    }
                    if let Some(name) = schema.subscription {
                        model.subscription = name.node.to_string();
                    }
                }
                TypeSystemDefinition::Type(definition) => {
                    let definition = definition.node;
                    let name = definition.name.node.to_string();
                    let fields_of = |fields: &[async_graphql::Positioned<
                        async_graphql::parser::types::FieldDefinition,
                    >]| {
                        fields
                            .iter()
                            .map(|field| FieldDef {
                                name: field.node.name.node.to_string(),
                                args: field
                                    .node
                                    .arguments
                                    .iter()
                                    .map(|a| input_def(&a.node))
                                    .collect(),
                                ty: field.node.ty.node.clone(),
                            })
                            .collect::<Vec<_>>()
                    };
                    match definition.kind {
                        TypeKind::Object(object) => {
                            model.objects.insert(name, fields_of(&object.fields));
                        }
                        TypeKind::Interface(interface) => {
                            model.objects.insert(name, fields_of(&interface.fields));
                        }
                        TypeKind::InputObject(input) => {
                            let fields = input.fields.iter().map(|f| input_def(&f.node)).collect();
                            model.inputs.insert(name, fields);
                        }
                        TypeKind::Enum(values) => {
                            let values = values
                                .values
                                .iter()
                                .map(|v| v.node.value.node.to_string())
                                .collect();
                            model.enums.insert(name, values);
                        }
                        TypeKind::Scalar | TypeKind::Union(_) => {}
                    }
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        for root in [&model.query, &model.mutation, &model.subscription] {
            assert!(
                model.objects.contains_key(root),
                "root type {root} is in the SDL"
            );
        }
        model
    }

    fn type_names(&self) -> Vec<&str> {
        self.objects
            .keys()
            .chain(self.inputs.keys())
            .chain(self.enums.keys())
            .map(String::as_str)
            .collect()
    }
}

/// Returns the named type inside any list and non-null wrappers.
fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(inner) => named(inner),
    }
}

/// A generated value, rendered either as a GraphQL literal or as JSON.
#[derive(Debug, Clone)]
enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A number written as is, such as `1e309`, which no `f64` or `i64` holds.
    Raw(String),
    Str(String),
    Enum(String),
    List(Vec<Val>),
    Object(Vec<(String, Val)>),
}

impl Val {
    fn literal(&self, out: &mut String) {
        match self {
            Val::Null => out.push_str("null"),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Int(n) => write!(out, "{n}").unwrap(),
            Val::Float(x) => write!(out, "{x:?}").unwrap(),
            Val::Raw(text) | Val::Enum(text) => out.push_str(text),
            Val::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Val::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.literal(out);
                }
                out.push(']');
            }
            Val::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(name);
                    out.push_str(": ");
                    value.literal(out);
                }
                out.push('}');
            }
        }
    }

    fn json(&self, out: &mut String) {
        match self {
            Val::Null => out.push_str("null"),
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Int(n) => write!(out, "{n}").unwrap(),
            Val::Float(x) => match serde_json::Number::from_f64(*x) {
                Some(number) => out.push_str(&number.to_string()),
                None => out.push_str("null"),
            },
            Val::Raw(text) => out.push_str(text),
            Val::Str(s) | Val::Enum(s) => out.push_str(&Value::from(s.as_str()).to_string()),
            Val::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.json(out);
                }
                out.push(']');
            }
            Val::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::from(name.as_str()).to_string());
                    out.push(':');
                    value.json(out);
                }
                out.push('}');
            }
        }
    }

    fn to_literal(&self) -> String {
        let mut out = String::new();
        self.literal(&mut out);
        out
    }

    fn to_json(&self) -> String {
        let mut out = String::new();
        self.json(&mut out);
        out
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One root field of a generated operation, kept to learn ids from its result.
#[derive(Debug, Clone)]
struct RootCall {
    alias: String,
    mutation: bool,
    return_type: String,
    args: Vec<(String, Val)>,
}

/// One generated HTTP request.
#[derive(Debug)]
struct FuzzRequest {
    kind: &'static str,
    method: Method,
    /// Path and query string.
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    /// Root fields of the document when the request carries a generated one.
    calls: Vec<RootCall>,
}

impl FuzzRequest {
    fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let mut headers = String::new();
        for (name, value) in &self.headers {
            let value = String::from_utf8_lossy(value);
            write!(headers, "{name}: {} ", shorten(&value, 80)).unwrap();
        }
        format!(
            "{} {} {} [{}] body {} bytes: {}",
            self.kind,
            self.method,
            shorten(&self.target, 600),
            headers.trim_end(),
            self.body.len(),
            shorten(&body, 1500)
        )
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}

/// Ids and pairs of ids learned from responses, so that generated calls hit existing rows.
#[derive(Default)]
struct Pools {
    ids: HashMap<String, Vec<String>>,
    /// Ids never to pass, by type: the admin token the run sends, which a generated
    /// `revokeApiToken` would otherwise revoke and end the run.
    protected: HashMap<String, HashSet<i64>>,
    phones: Vec<String>,
    /// Secrets of tokens the run created, sent by some requests instead of the admin token.
    tokens: Vec<String>,
    /// Ids that one successful mutation used together, by type: a trip with its driver, a
    /// trip with its rider.
    links: Vec<HashMap<String, String>>,
}

impl Pools {
    fn add_id(&mut self, type_name: &str, id: &str) {
        let ids = self.ids.entry(type_name.to_owned()).or_default();
        if !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
    }
}

struct Fuzzer {
    model: Model,
    rng: Rng,
    pools: Pools,
    /// Ids of the current root call's link, preferred for its id arguments.
    link: Option<HashMap<String, String>>,
    serial: u64,
}

/// Id argument names and the type whose ids they take.
fn id_type(argument: &str, owner: &str) -> String {
    match argument {
        "id" | "after" | "before" => owner.to_owned(),
        name => match name.strip_suffix("Id") {
            Some(prefix) if !prefix.is_empty() => {
                let mut chars = prefix.chars();
                let first = chars.next().unwrap().to_ascii_uppercase();
                format!("{first}{}", chars.as_str())
            }
            _ => owner.to_owned(),
        },
    }
}

const EDGE_STRINGS: &[&str] = &[
    "",
    " ",
    "Ünïcödé 🚕 مرحبا 你好 ✓",
    "\u{0}\u{1}\u{1b}[31m\r\n\t\u{7f}",
    "'; DROP TABLE trips; --",
    "\" OR 1=1 --",
    "1' OR '1'='1",
    "%s%n%x%d",
    "../../etc/passwd",
    "\u{202e}evil\u{200b}\u{feff}",
    "\u{ffff}\u{fffd}",
    "null",
    "+",
    "+0",
    "+250788123456\n",
    "{\"a\": 1}",
    "<script>alert(1)</script>",
    "$1",
    "\\",
];

const EDGE_IDS: &[&str] = &[
    "0",
    "-1",
    "-9223372036854775808",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999999999",
    "abc",
    "",
    " 1",
    "1 ",
    "1.5",
    "1e3",
    "0x10",
    "１",
    "+1",
    "01",
    "NaN",
];

const EDGE_TIMES: &[&str] = &[
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "+262143-12-31T23:59:59Z",
    "-262144-01-01T00:00:00Z",
    "2026-13-45T99:99:99Z",
    "2026-02-30T00:00:00Z",
    "2026-01-01",
    "2026-01-01T00:00:00",
    "2026-01-01T00:00:00+14:00",
    "2026-01-01T00:00:00-23:59",
    "2026-01-01T00:00:00.123456789123Z",
    "now",
    "",
    "T",
];

impl Fuzzer {
    fn new(model: Model, seed: u64) -> Fuzzer {
        Fuzzer {
            model,
            rng: Rng(seed),
            pools: Pools::default(),
            link: None,
            serial: 0,
        }
    }

    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    // ---- values ----------------------------------------------------------------------

    /// Generates a value for the argument or input field `name` of type `ty`. `owner` is the
    /// type whose ids `id`, `after` and `before` take.
    fn value(&mut self, ty: &Type, name: &str, owner: &str, depth: usize) -> Val {
        if self.rng.chance(0.05) {
            return self.wrong_type_value(depth);
        }
        if ty.nullable && self.rng.chance(0.1) {
            return Val::Null;
        }
        match &ty.base {
            BaseType::List(inner) => {
                if self.rng.chance(0.03) {
                    // A single value where a list is expected is coerced to a list of one.
                    return self.value(inner, name, owner, depth + 1);
                }
                let length = match self.rng.below(20) {
                    0 | 1 => 0,
                    2 => self.rng.range(4, 40),
                    3 if depth == 0 => self.rng.range(495, 510),
                    _ => self.rng.range(1, 3),
                };
                let items = (0..length)
                    .map(|_| self.value(inner, name, owner, depth + 1))
                    .collect();
                Val::List(items)
            }
            BaseType::Named(type_name) => self.named_value(type_name.as_str(), name, owner, depth),
        }
    }

    fn named_value(&mut self, type_name: &str, name: &str, owner: &str, depth: usize) -> Val {
        if let Some(values) = self.model.enums.get(type_name) {
            let values = values.clone();
            return self.enum_value(&values);
        }
        if let Some(fields) = self.model.inputs.get(type_name) {
            let fields = fields.clone();
            return self.input_object(&fields, owner, depth);
        }
        match type_name {
            "ID" => self.id_value(name, owner),
            "String" => self.string_value(name),
            "Int" => self.int_value(name),
            "Float" => self.float_value(name),
            "Boolean" => match self.rng.below(10) {
                0 => self.wrong_type_value(depth),
                n => Val::Bool(n % 2 == 0),
            },
            "DateTime" => self.time_value(),
            _ => self.string_value(name),
        }
    }

    fn wrong_type_value(&mut self, depth: usize) -> Val {
        match self.rng.below(9) {
            0 => Val::Null,
            1 => Val::Bool(true),
            2 => Val::Int(self.rng.next_u64() as i64),
            3 => Val::Float(-0.0),
            4 => Val::Str(self.rng.pick(EDGE_STRINGS).to_string()),
            5 => Val::Enum("NOT_A_VALUE".into()),
            6 if depth < 3 => Val::List(vec![self.wrong_type_value(depth + 1)]),
            7 if depth < 3 => Val::Object(vec![("bogus".into(), self.wrong_type_value(depth + 1))]),
            _ => Val::Raw("1e309".into()),
        }
    }

    fn enum_value(&mut self, values: &[String]) -> Val {
        match self.rng.below(25) {
            0 => Val::Enum(self.rng.pick(values).to_lowercase()),
            1 => Val::Enum("NOPE".into()),
            2 => Val::Str(self.rng.pick(values).clone()),
            3 => Val::Int(1),
            _ => Val::Enum(self.rng.pick(values).clone()),
        }
    }

    fn input_object(&mut self, fields: &[InputDef], owner: &str, depth: usize) -> Val {
        if depth > 6 {
            return Val::Null;
        }
        let mut out = Vec::new();
        // A `role` picks the pool of the `id` next to it, as in `ActorInput`.
        let mut id_owner = owner.to_owned();
        for field in fields {
            let required = !field.ty.nullable && !field.has_default;
            let include = if required {
                self.rng.chance(0.97)
            } else {
                self.rng.chance(0.5)
            };
            if !include {
                continue;
            }
            let value = self.value(&field.ty, &field.name, &id_owner, depth + 1);
            if field.name == "role"
                && let Val::Enum(role) = &value
            {
                let mut chars = role.chars();
                if let Some(first) = chars.next() {
                    id_owner = format!("{first}{}", chars.as_str().to_lowercase());
                }
            }
            out.push((field.name.clone(), value));
        }
        if self.rng.chance(0.04) {
            out.push(("unknownField".into(), Val::Int(1)));
        }
        if self.rng.chance(0.03) && !out.is_empty() {
            // The same field twice.
            let first = out[0].clone();
            out.push(first);
        }
        Val::Object(out)
    }

    fn id_value(&mut self, name: &str, owner: &str) -> Val {
        let type_name = id_type(name, owner);
        let value = self.any_id_value(&type_name);
        let text = match &value {
            Val::Str(id) => id.clone(),
            Val::Int(n) => n.to_string(),
            _ => String::new(),
        };
        // Compared as numbers, because the server reads `01` and `+1` as id 1.
        let number = text.trim().parse::<i64>().ok();
        let protected = self.pools.protected.get(&type_name);
        if let (Some(ids), Some(number)) = (protected, number)
            && ids.contains(&number)
        {
            return Val::Str("999999".into());
        }
        value
    }

    fn any_id_value(&mut self, type_name: &str) -> Val {
        if let Some(id) = self.link.as_ref().and_then(|link| link.get(type_name))
            && self.rng.chance(0.85)
        {
            return Val::Str(id.clone());
        }
        let known = self.pools.ids.get(type_name).cloned().unwrap_or_default();
        match self.rng.below(20) {
            0..=12 if !known.is_empty() => {
                // Recent ids are likelier to be in a useful state.
                let recent = known.len().saturating_sub(10);
                let index = if self.rng.chance(0.6) {
                    self.rng.range(recent, known.len() - 1)
                } else {
                    self.rng.below(known.len())
                };
                Val::Str(known[index].clone())
            }
            0..=12 => Val::Str("1".into()),
            13 | 14 => Val::Str((known.len() + 1000 + self.rng.below(1000)).to_string()),
            15..=17 => Val::Str(self.rng.pick(EDGE_IDS).to_string()),
            18 => Val::Int(self.rng.range(1, known.len() + 2) as i64),
            _ => Val::Int(-(self.rng.below(1000) as i64)),
        }
    }

    fn long_string(&mut self) -> String {
        match self.rng.below(3) {
            0 => "a".repeat(10_240),
            1 => "é".repeat(5_120),
            _ => "🚕".repeat(self.rng.range(100, 3_000)),
        }
    }

    fn string_value(&mut self, name: &str) -> Val {
        if self.rng.chance(0.15) {
            return Val::Str(match self.rng.below(4) {
                0 => self.long_string(),
                _ => self.rng.pick(EDGE_STRINGS).to_string(),
            });
        }
        let serial = self.next_serial();
        let text = match name {
            "phone" => {
                if !self.pools.phones.is_empty() && self.rng.chance(0.3) {
                    self.rng.pick(&self.pools.phones).clone()
                } else {
                    format!("+2507{:08}", self.rng.below(100_000_000))
                }
            }
            "plate" => format!("FZ {serial:05} {}", self.rng.below(10)),
            "name" => format!("Fuzz {serial}"),
            _ => format!("fuzz text {serial}"),
        };
        Val::Str(text)
    }

    fn int_value(&mut self, name: &str) -> Val {
        if self.rng.chance(0.8) {
            let n = match name {
                "stars" => self.rng.range(1, 5),
                "limit" => self.rng.range(1, 25),
                "maxLocationAgeSeconds" => self.rng.range(1, 120),
                _ => self.rng.range(0, 100),
            };
            return Val::Int(n as i64);
        }
        match self.rng.below(11) {
            0 => Val::Int(0),
            1 => Val::Int(-1),
            2 => Val::Int(i64::from(i32::MAX)),
            3 => Val::Int(i64::from(i32::MIN)),
            4 => Val::Int(i64::from(i32::MAX) + 1),
            5 => Val::Int(i64::MAX),
            6 => Val::Int(i64::MIN),
            7 => Val::Raw("123456789012345678901234567890".into()),
            8 => Val::Float(1.5),
            9 => Val::Raw("1e3".into()),
            _ => Val::Str("5".into()),
        }
    }

    fn float_value(&mut self, name: &str) -> Val {
        if self.rng.chance(0.8) {
            let x = match name {
                "lat" => CENTER.0 + self.rng.between(-0.02, 0.02),
                "lng" => CENTER.1 + self.rng.between(-0.02, 0.02),
                "radiusMeters" => self.rng.between(1.0, 20_000.0),
                "headingDeg" => self.rng.between(0.0, 360.0),
                "speedMps" => self.rng.between(0.0, 30.0),
                "accuracyMeters" => self.rng.between(1.0, 50.0),
                _ => self.rng.between(0.0, 1000.0),
            };
            return Val::Float(x);
        }
        match self.rng.below(18) {
            0 => Val::Float(1e308),
            1 => Val::Float(-1e308),
            2 => Val::Float(f64::MAX),
            3 => Val::Float(f64::MIN_POSITIVE),
            4 => Val::Float(5e-324),
            5 => Val::Float(-0.0),
            6 => Val::Float(0.0),
            7 => Val::Float(90.000_000_1),
            8 => Val::Float(-180.000_001),
            9 => Val::Float(180.0),
            10 => Val::Float(-90.0),
            11 => Val::Raw("1e309".into()),
            12 => Val::Raw("-1e400".into()),
            13 => Val::Raw("1e-400".into()),
            14 => Val::Raw("123456789012345678901234567890".into()),
            15 => Val::Int(i64::MAX),
            16 => Val::Str("1.5".into()),
            _ => Val::Float(self.rng.between(-1e6, 1e6)),
        }
    }

    fn time_value(&mut self) -> Val {
        if self.rng.chance(0.75) {
            let offset = self.rng.between(-20.0, 2.0);
            let at = chrono::Utc::now() + chrono::TimeDelta::milliseconds((offset * 1000.0) as i64);
            let format = if self.rng.chance(0.5) {
                chrono::SecondsFormat::Millis
            } else {
                chrono::SecondsFormat::AutoSi
            };
            return Val::Str(at.to_rfc3339_opts(format, true));
        }
        match self.rng.below(8) {
            0 => Val::Int(1_700_000_000),
            1 => {
                let days = self.rng.range(1, 30) as i64;
                let at = chrono::Utc::now() + chrono::TimeDelta::days(days);
                Val::Str(at.to_rfc3339())
            }
            _ => Val::Str(self.rng.pick(EDGE_TIMES).to_string()),
        }
    }

    // ---- documents -------------------------------------------------------------------

    fn is_leaf(&self, type_name: &str) -> bool {
        !self.model.objects.contains_key(type_name)
    }

    /// Generates a selection set for `type_name`, or an empty string for a leaf type.
    fn selection(&mut self, type_name: &str, depth: usize, max_depth: usize, deep: bool) -> String {
        let Some(fields) = self.model.objects.get(type_name).cloned() else {
            return String::new();
        };
        let mut parts = Vec::new();
        if let Some(id) = fields.iter().find(|f| f.name == "id")
            && self.rng.chance(0.85)
        {
            parts.push(id.name.clone());
        }
        let count = self.rng.range(1, fields.len().min(6));
        let mut chosen: Vec<FieldDef> =
            (0..count).map(|_| self.rng.pick(&fields).clone()).collect();
        if deep && let Some(nested) = fields.iter().find(|f| !self.is_leaf(named(&f.ty))) {
            chosen.insert(0, nested.clone());
        }
        let mut seen = HashSet::new();
        for field in chosen {
            if !seen.insert(field.name.clone()) || field.name == "id" {
                continue;
            }
            let field_type = named(&field.ty).to_owned();
            let mut text = String::new();
            if self.rng.chance(0.05) {
                write!(text, "{}Alias: ", field.name).unwrap();
            }
            text.push_str(&field.name);
            if !field.args.is_empty() {
                let mut args = Vec::new();
                for arg in &field.args {
                    if !arg.ty.nullable || self.rng.chance(0.5) {
                        let value = self.value(&arg.ty, &arg.name, &field_type, 0);
                        args.push((arg.name.clone(), value));
                    }
                }
                if !args.is_empty() {
                    text.push('(');
                    for (i, (name, value)) in args.iter().enumerate() {
                        if i > 0 {
                            text.push_str(", ");
                        }
                        write!(text, "{name}: {}", value.to_literal()).unwrap();
                    }
                    text.push(')');
                }
            }
            if self.rng.chance(0.03) {
                text.push_str(if self.rng.chance(0.5) {
                    " @include(if: true)"
                } else {
                    " @skip(if: false)"
                });
            }
            if !self.is_leaf(&field_type) {
                if depth + 1 >= max_depth {
                    continue;
                }
                let sub = self.selection(&field_type, depth + 1, max_depth, deep);
                write!(text, " {{ {sub} }}").unwrap();
            }
            parts.push(text);
        }
        if self.rng.chance(0.08) {
            parts.push("__typename".into());
        }
        if self.rng.chance(0.04) {
            parts.push(format!("... on {type_name} {{ __typename }}"));
        }
        if parts.is_empty() {
            parts.push("__typename".into());
        }
        parts.join(" ")
    }

    /// Generates a document of one operation with one to three root fields, and its variables.
    fn operation(&mut self) -> (String, String, Vec<RootCall>, bool) {
        let keyword = match self.rng.below(20) {
            0 => "subscription",
            1..=9 => "query",
            _ => "mutation",
        };
        self.operation_of(keyword)
    }

    /// Generates a document of one `keyword` operation, and its variables.
    fn operation_of(&mut self, keyword: &'static str) -> (String, String, Vec<RootCall>, bool) {
        let (root, mutation) = match keyword {
            "subscription" => (self.model.subscription.clone(), false),
            "query" => (self.model.query.clone(), false),
            _ => (self.model.mutation.clone(), true),
        };
        let fields = self.model.objects[&root].clone();
        let count = if keyword == "subscription" || self.rng.chance(0.75) {
            1
        } else {
            self.rng.range(2, 3)
        };
        let mut declarations = Vec::new();
        let mut variables = Vec::new();
        let mut body = Vec::new();
        let mut calls = Vec::new();
        for index in 0..count {
            let field = self.rng.pick(&fields).clone();
            let return_type = named(&field.ty).to_owned();
            self.link = if self.pools.links.is_empty() || self.rng.chance(0.4) {
                None
            } else {
                let recent = self.pools.links.len().saturating_sub(30);
                let pick = self.rng.range(recent, self.pools.links.len() - 1);
                Some(self.pools.links[pick].clone())
            };
            let mut args = Vec::new();
            for arg in &field.args {
                let required = !arg.ty.nullable && !arg.has_default;
                let skip = if required {
                    self.rng.chance(0.03)
                } else {
                    self.rng.chance(0.4)
                };
                if !skip {
                    let value = self.value(&arg.ty, &arg.name, &return_type, 0);
                    args.push((arg.name.clone(), value, arg.ty.clone()));
                }
            }
            if self.rng.chance(0.03) {
                args.push(("bogus".into(), Val::Int(1), Type::new("Int").unwrap()));
            }
            let alias = format!("r{index}");
            let mut text = format!("{alias}: {}", field.name);
            if !args.is_empty() {
                text.push('(');
                for (i, (name, value, ty)) in args.iter().enumerate() {
                    if i > 0 {
                        text.push_str(", ");
                    }
                    if self.rng.chance(0.5) {
                        let variable = format!("v{index}_{i}");
                        let declared = if self.rng.chance(0.06) {
                            self.rng
                                .pick(&["String", "Int!", "[ID]", "Bogus", "ID!", "Float"])
                                .to_string()
                        } else {
                            ty.to_string()
                        };
                        declarations.push(format!("${variable}: {declared}"));
                        if !self.rng.chance(0.04) {
                            variables.push((variable.clone(), value.clone()));
                        }
                        write!(text, "{name}: ${variable}").unwrap();
                    } else {
                        write!(text, "{name}: {}", value.to_literal()).unwrap();
                    }
                }
                text.push(')');
            }
            let deep = self.rng.chance(0.04);
            let max_depth = if deep {
                self.rng.range(8, 18)
            } else {
                self.rng.range(2, 5)
            };
            let selection = self.selection(&return_type, 1, max_depth, deep);
            if !selection.is_empty() {
                write!(text, " {{ {selection} }}").unwrap();
            }
            body.push(text);
            calls.push(RootCall {
                alias,
                mutation,
                return_type,
                args: args.into_iter().map(|(n, v, _)| (n, v)).collect(),
            });
        }
        self.link = None;
        if self.rng.chance(0.05) {
            variables.push(("unused".into(), Val::Int(1)));
        }
        let name = if self.rng.chance(0.3) {
            format!(" Op{}", self.rng.below(100))
        } else {
            String::new()
        };
        let declarations = if declarations.is_empty() {
            String::new()
        } else {
            format!("({})", declarations.join(", "))
        };
        let document = format!("{keyword}{name}{declarations} {{ {} }}", body.join(" "));
        let variables = Val::Object(variables).to_json();
        (document, variables, calls, mutation)
    }

    /// Picks a nesting depth for the deep documents. It falls near the server's limit of 64,
    /// near the depth that overflowed the parser's stack in a debug build (about 600), or far
    /// beyond.
    fn nesting_depth(&mut self) -> usize {
        let center = *self.rng.pick(&[64, 600, 5_000]);
        self.rng.range(center - 40, center + 40)
    }

    /// Generates a document that targets the parser, validation and limits rather than the
    /// resolvers.
    fn special_document(&mut self) -> String {
        let names = self
            .model
            .type_names()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>();
        let query = &self.model.query;
        match self.rng.below(17) {
            0 => "{ __schema { types { name kind fields { name args { name type { name kind \
                  ofType { name kind ofType { name } } } } } inputFields { name } enumValues \
                  { name } } queryType { name } } }"
                .into(),
            1 => {
                let name = if self.rng.chance(0.8) {
                    self.rng.pick(&names).clone()
                } else {
                    self.rng.pick(EDGE_STRINGS).to_string()
                };
                format!(
                    "{{ __type(name: {}) {{ name kind fields {{ name }} }} }}",
                    Val::Str(name).to_literal()
                )
            }
            2 => format!(
                "query {{ ...A }} fragment A on {query} {{ ...B }} fragment B on {query} {{ ...A }}"
            ),
            3 => "query { ...Missing }".into(),
            4 => {
                let count = self.rng.range(500, 3_000);
                let fields: String = (0..count).map(|i| format!("a{i}: __typename ")).collect();
                format!("{{ {fields}}}")
            }
            5 => {
                let depth = self.nesting_depth();
                format!(
                    "{}__typename{}",
                    "{ a: __typename ".repeat(depth),
                    " }".repeat(depth)
                )
            }
            6 => {
                let depth = self.nesting_depth();
                format!(
                    "{{ nearbyDrivers(near: {{lat: 1, lng: 1}}, vehicleTypes: {}MOTO{}) {{ radiusMeters }} }}",
                    "[".repeat(depth),
                    "]".repeat(depth)
                )
            }
            7 => {
                let depth = self.nesting_depth();
                format!(
                    "mutation {{ requestTrip(input: {{riderId: 1, a: {}1{}}}) {{ id }} }}",
                    "{a: ".repeat(depth),
                    "}".repeat(depth)
                )
            }
            8 => "{ __typename } { __typename }".into(),
            9 => "{ __typename @unknown } query @skip(if: true) { __typename @include }".into(),
            10 => "query($a: ID!, $a: Int) { driver(id: $b) { id } }".into(),
            11 => {
                let depth = self.rng.range(13, 60);
                let mut selection = String::from("id");
                for level in 0..depth {
                    let field = if level % 2 == 0 { "trip" } else { "offers" };
                    selection = format!("{field} {{ {selection} }}");
                }
                format!("{{ trips {{ {selection} }} }}")
            }
            12 => {
                let literal = self.rng.pick(&[
                    "\"\\uD800\"",
                    "\"\\u{110000}\"",
                    "\"\\u{1F695}\"",
                    "\"\"\"block \\\"\"\" string\"\"\"",
                    "\"\\x41\"",
                    "\"unterminated",
                ]);
                format!("{{ driverByPhone(phone: {literal}) {{ id }} }}")
            }
            13 => {
                let number = self.rng.pick(&[
                    "1e400",
                    "-1e400",
                    "99999999999999999999999",
                    "1e-400",
                    "0x10",
                    "1_000",
                    ".5",
                    "5.",
                ]);
                format!(
                    "{{ nearbyDrivers(near: {{lat: {number}, lng: {number}}}, limit: {number}) {{ radiusMeters }} }}"
                )
            }
            14 => format!(
                "subscription {{ {} }}",
                "liveTrips { trip { id } } driverLocation(driverId: 1) { driverId }"
            ),
            15 => {
                let count = self.rng.range(20, 60);
                let fields: String = (0..count)
                    .map(|i| {
                        let serial = self.next_serial();
                        format!(
                            "m{i}: registerRider(input: {{name: \"Bulk {serial}\", phone: \"+2506{serial:08}\"}}) {{ id }} "
                        )
                    })
                    .collect();
                format!("mutation {{ {fields}}}")
            }
            _ => format!("query Named {{ __typename }} query Other {{ {query}Typo: __typename }}"),
        }
    }

    /// Mangles a document: truncation, flipped, inserted or deleted characters.
    fn mangle(&mut self, document: &str) -> String {
        let mut bytes = document.as_bytes().to_vec();
        let edits = self.rng.range(1, 4);
        for _ in 0..edits {
            if bytes.is_empty() {
                break;
            }
            let at = self.rng.below(bytes.len());
            match self.rng.below(5) {
                0 => bytes.truncate(at),
                1 => bytes[at] ^= 1 << self.rng.below(8),
                2 => {
                    let junk = *self.rng.pick(&[
                        b'{', b'}', b'(', b')', b'$', b'"', b'!', b'@', b'.', b'\\', b'#', 0,
                    ]);
                    bytes.insert(at, junk);
                }
                3 => {
                    bytes.remove(at);
                }
                _ => {
                    let end = (at + self.rng.range(1, 30)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy);
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    // ---- requests --------------------------------------------------------------------

    fn post_json(
        &mut self,
        kind: &'static str,
        body: Vec<u8>,
        calls: Vec<RootCall>,
    ) -> FuzzRequest {
        FuzzRequest {
            kind,
            method: Method::POST,
            target: "/graphql".into(),
            headers: vec![
                ("content-type", b"application/json".to_vec()),
                (
                    "authorization",
                    format!("Bearer {ADMIN_TOKEN}").into_bytes(),
                ),
            ],
            body,
            calls,
        }
    }

    fn envelope(document: &str, variables: &str, operation_name: Option<&str>) -> String {
        let mut body = format!("{{\"query\":{}", Value::from(document));
        write!(body, ",\"variables\":{variables}").unwrap();
        if let Some(name) = operation_name {
            write!(body, ",\"operationName\":{}", Value::from(name)).unwrap();
        }
        body.push('}');
        body
    }

    /// Generates the next request of the run.
    fn request(&mut self) -> FuzzRequest {
        match self.rng.below(100) {
            0..=57 => {
                let (document, variables, calls, _) = self.operation();
                let body = Self::envelope(&document, &variables, None);
                let mut request = self.post_json("operation", body.into_bytes(), calls);
                if !self.pools.tokens.is_empty() && self.rng.chance(0.15) {
                    let token = self.rng.pick(&self.pools.tokens).clone();
                    request.kind = "operation with a created token";
                    request.headers.retain(|(name, _)| *name != "authorization");
                    request
                        .headers
                        .push(("authorization", format!("Bearer {token}").into_bytes()));
                }
                request
            }
            58..=63 => {
                let count = self.rng.range(1, 3);
                let mut bodies = Vec::new();
                let mut calls = Vec::new();
                for _ in 0..count {
                    let (document, variables, mut more, _) = self.operation();
                    bodies.push(Self::envelope(&document, &variables, None));
                    calls.append(&mut more);
                }
                // Calls of a batch share aliases; harvesting skips them.
                calls.clear();
                let body = format!("[{}]", bodies.join(","));
                self.post_json("batch", body.into_bytes(), calls)
            }
            64..=70 => self.get_request(),
            71..=79 => {
                let (document, variables, _, _) = self.operation();
                let document = self.mangle(&document);
                let body = Self::envelope(&document, &variables, None);
                self.post_json("mangled document", body.into_bytes(), Vec::new())
            }
            80..=84 => {
                let document = self.special_document();
                let name = self.rng.chance(0.3).then_some("Named");
                let body = Self::envelope(&document, "{}", name);
                self.post_json("special document", body.into_bytes(), Vec::new())
            }
            85..=89 => {
                let body = self.malformed_body();
                self.post_json("malformed body", body, Vec::new())
            }
            90..=93 => self.content_type_request(),
            94..=96 => self.auth_request(),
            _ => self.huge_request(),
        }
    }

    fn get_request(&mut self) -> FuzzRequest {
        let mut params: Vec<(String, String)> = Vec::new();
        match self.rng.below(10) {
            0 => {}
            1 => params.push(("query".into(), String::new())),
            2 => {
                params.push(("query".into(), "{ __typename }".into()));
                params.push(("variables".into(), "{".into()));
            }
            3 => {
                params.push(("query".into(), "{ __typename }".into()));
                params.push(("query".into(), "{ drivers { id } }".into()));
                params.push(("operationName".into(), "Nope".into()));
            }
            _ => {
                let (document, variables, _, _) = self.operation();
                let document = if self.rng.chance(0.2) {
                    self.mangle(&document)
                } else {
                    document
                };
                params.push(("query".into(), document));
                params.push(("variables".into(), variables));
                if self.rng.chance(0.2) {
                    params.push(("operationName".into(), "Op1".into()));
                }
            }
        }
        let url = url::Url::parse_with_params("http://localhost/graphql", &params).unwrap();
        let mut target = url.path().to_owned();
        if let Some(query) = url.query() {
            target.push('?');
            target.push_str(query);
        }
        if target.len() > MAX_URI_BYTES {
            // The `http` crate rejects longer URIs before sending, so keep a prefix, which the
            // server reads as a cut-off document.
            let mut end = MAX_URI_BYTES;
            while !target.is_char_boundary(end) {
                end -= 1;
            }
            target.truncate(end);
        }
        if self.rng.chance(0.1) {
            target.push_str("&%FF%FE=%C0%AF&query=%");
        }
        FuzzRequest {
            kind: "get",
            method: Method::GET,
            target,
            headers: vec![(
                "authorization",
                format!("Bearer {ADMIN_TOKEN}").into_bytes(),
            )],
            body: Vec::new(),
            calls: Vec::new(),
        }
    }

    fn malformed_body(&mut self) -> Vec<u8> {
        let fixed: &[&str] = &[
            "",
            "{",
            "}",
            "[",
            "null",
            "true",
            "1",
            "\"query\"",
            "[]",
            "[[]]",
            "[{}]",
            "{}",
            "[null]",
            "{\"query\": 1}",
            "{\"query\": null}",
            "{\"query\": [\"{ __typename }\"]}",
            "{\"query\": \"{ __typename }\", \"variables\": \"x\"}",
            "{\"query\": \"{ __typename }\", \"variables\": [1]}",
            "{\"query\": \"{ __typename }\", \"variables\": null}",
            "{\"query\": \"{ __typename }\", \"operationName\": 5}",
            "{\"query\": \"{ __typename }\", \"extensions\": {\"persistedQuery\": {\"version\": 1, \"sha256Hash\": \"abc\"}}}",
            "{\"query\": \"{ __typename }\", \"query\": \"{ drivers { id } }\"}",
            "{\"query\": \"{ __typename }\\u0000\"}",
            "\u{feff}{\"query\": \"{ __typename }\"}",
            "{\"query\": \"{ __typename }\",}",
            "{'query': '{ __typename }'}",
            "{\"query\": \"{ __typename }\"} trailing",
        ];
        match self.rng.below(5) {
            0 => {
                let length = self.rng.range(1, 300);
                (0..length).map(|_| self.rng.next_u64() as u8).collect()
            }
            1 => {
                let depth = self.rng.range(100, 100_000);
                let open = if self.rng.chance(0.5) { "[" } else { "{\"a\":" };
                open.repeat(depth).into_bytes()
            }
            2 => {
                let (document, variables, _, _) = self.operation();
                let body = Self::envelope(&document, &variables, None);
                let cut = self.rng.below(body.len().max(1));
                body.as_bytes()[..cut].to_vec()
            }
            _ => self.rng.pick(fixed).as_bytes().to_vec(),
        }
    }

    fn content_type_request(&mut self) -> FuzzRequest {
        let (document, variables, _, _) = self.operation();
        let json_body = Self::envelope(&document, &variables, None).into_bytes();
        let boundary = "fuzzboundary";
        let part = |headers: &str, name: &str, content: &str| {
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{headers}\r\n\r\n{content}\r\n"
            )
        };
        let (content_type, body): (Option<&str>, Vec<u8>) = match self.rng.below(14) {
            0 => (None, json_body),
            1 => (Some("text/plain"), json_body),
            2 => (Some("application/graphql"), document.into_bytes()),
            3 => (
                Some("application/x-www-form-urlencoded"),
                b"query=%7B__typename%7D".to_vec(),
            ),
            4 => (Some("multipart/form-data"), json_body),
            5 => (Some("application/json; charset=utf-16"), json_body),
            6 => (Some("application/octet-stream"), json_body),
            7 => (Some("*/*"), json_body),
            8 => (Some("not a mime type"), json_body),
            9 => (Some(""), json_body),
            10 => (Some("application/graphql-response+json"), json_body),
            _ => {
                // A multipart upload request, with a part type that varies.
                let part_type = self.rng.pick(&[
                    "",
                    "\r\nContent-Type: application/json",
                    "\r\nContent-Type: multipart/mixed",
                    "\r\nContent-Type: multipart/form-data; boundary=inner",
                    "\r\nContent-Type: text/plain",
                ]);
                let operations = String::from_utf8_lossy(&json_body).into_owned();
                let mut body = part(part_type, "operations", &operations);
                if self.rng.chance(0.7) {
                    body.push_str(&part("", "map", "{\"0\": [\"variables.file\"]}"));
                }
                if self.rng.chance(0.5) {
                    body.push_str(&format!(
                        "--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"a.txt\"\r\n\r\nfile\r\n"
                    ));
                }
                if self.rng.chance(0.8) {
                    body.push_str(&format!("--{boundary}--\r\n"));
                }
                (
                    Some("multipart/form-data; boundary=fuzzboundary"),
                    body.into_bytes(),
                )
            }
        };
        let mut headers = vec![(
            "authorization",
            format!("Bearer {ADMIN_TOKEN}").into_bytes(),
        )];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type.as_bytes().to_vec()));
        }
        let method = match self.rng.below(12) {
            0 => Method::PUT,
            1 => Method::DELETE,
            2 => Method::PATCH,
            3 => Method::OPTIONS,
            _ => Method::POST,
        };
        FuzzRequest {
            kind: "content type",
            method,
            target: "/graphql".into(),
            headers,
            body,
            calls: Vec::new(),
        }
    }

    fn auth_request(&mut self) -> FuzzRequest {
        let hex: String = (0..64)
            .map(|_| format!("{:x}", self.rng.below(16)))
            .collect();
        let value: Option<Vec<u8>> = match self.rng.below(9) {
            0 => None,
            1 => Some(b"Bearer".to_vec()),
            2 => Some(b"Bearer ".to_vec()),
            3 => Some(format!("Bearer mob_{hex}").into_bytes()),
            4 => Some(b"Basic YWRtaW46YWRtaW4=".to_vec()),
            5 => Some(format!("bearer {ADMIN_TOKEN}").into_bytes()),
            6 => Some(format!("Bearer {ADMIN_TOKEN}   ").into_bytes()),
            7 => Some(b"Bearer mob_\xc3\xa9\xff".to_vec()),
            _ => Some(format!("Bearer {}", "x".repeat(8_000)).into_bytes()),
        };
        let mut request = self.post_json(
            "auth",
            b"{\"query\": \"{ __typename }\"}".to_vec(),
            Vec::new(),
        );
        request.headers.retain(|(name, _)| *name != "authorization");
        if let Some(value) = value {
            request.headers.push(("authorization", value));
        }
        request
    }

    fn huge_request(&mut self) -> FuzzRequest {
        let document = "query($x: String) { __typename }";
        let variables = match self.rng.below(5) {
            0 => {
                let count = self.rng.range(5_000, 40_000);
                let keys: Vec<String> = (0..count).map(|i| format!("\"k{i}\":{i}")).collect();
                format!("{{{}}}", keys.join(","))
            }
            1 => {
                let depth = self.rng.range(100, 50_000);
                format!("{{\"x\":{}1{}}}", "[".repeat(depth), "]".repeat(depth))
            }
            2 => format!("{{\"x\":{}}}", Value::from("é".repeat(400_000))),
            3 => format!("{{\"x\":{}}}", Value::from("a".repeat(1_100_000))),
            _ => {
                let count = self.rng.range(10_000, 60_000);
                format!("{{\"x\":[{}]}}", vec!["1e308"; count].join(","))
            }
        };
        let body = Self::envelope(document, &variables, None);
        self.post_json("huge variables", body.into_bytes(), Vec::new())
    }

    // ---- learning from responses -----------------------------------------------------

    /// Learns ids and phone numbers from a response, and links between the ids that a
    /// successful mutation used together.
    fn harvest(&mut self, request: &FuzzRequest, body: &Value) {
        let Some(data) = body.get("data").filter(|d| d.is_object()) else {
            return;
        };
        let failed: HashSet<&str> = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["path"][0].as_str())
            .collect();
        for call in &request.calls {
            let result = &data[&call.alias];
            if result.is_null() {
                continue;
            }
            self.walk(&call.return_type, result);
            if !call.mutation || failed.contains(call.alias.as_str()) {
                continue;
            }
            let mut link = HashMap::new();
            for (name, value) in &call.args {
                collect_ids(name, value, &call.return_type, &mut link);
            }
            if let Some(id) = result["id"].as_str() {
                link.insert(call.return_type.clone(), id.to_owned());
            }
            if let Some(trip) = result["tripId"].as_str() {
                link.insert("Trip".into(), trip.to_owned());
            }
            if link.len() >= 2 {
                self.pools.links.push(link);
            }
        }
    }

    fn walk(&mut self, type_name: &str, value: &Value) {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.walk(type_name, item);
                }
            }
            Value::Object(object) => {
                let Some(fields) = self.model.objects.get(type_name) else {
                    return;
                };
                let nested: Vec<(String, String)> = fields
                    .iter()
                    .filter(|f| object.contains_key(&f.name))
                    .map(|f| (f.name.clone(), named(&f.ty).to_owned()))
                    .collect();
                if let Some(id) = object.get("id").and_then(Value::as_str) {
                    self.pools.add_id(type_name, id);
                }
                if let Some(secret) = object.get("secret").and_then(Value::as_str)
                    && secret.starts_with("mob_")
                {
                    self.pools.tokens.push(secret.to_owned());
                }
                if let Some(phone) = object.get("phone").and_then(Value::as_str)
                    && !phone.contains('*')
                    && !self.pools.phones.iter().any(|p| p == phone)
                {
                    self.pools.phones.push(phone.to_owned());
                }
                for (name, field_type) in nested {
                    self.walk(&field_type, &object[&name]);
                }
            }
            _ => {}
        }
    }
}

/// Adds the ids of an argument value to `link`, by the type their names point to.
fn collect_ids(name: &str, value: &Val, owner: &str, link: &mut HashMap<String, String>) {
    match value {
        Val::Object(fields) => {
            let role = fields.iter().find_map(|(n, v)| match (n.as_str(), v) {
                ("role", Val::Enum(role)) => Some(role.clone()),
                _ => None,
            });
            for (field, inner) in fields {
                if field == "id"
                    && let (Some(role), Some(id)) = (&role, inner.as_str())
                {
                    let mut chars = role.chars();
                    if let Some(first) = chars.next() {
                        let type_name = format!("{first}{}", chars.as_str().to_lowercase());
                        link.insert(type_name, id.to_owned());
                    }
                    continue;
                }
                collect_ids(field, inner, owner, link);
            }
        }
        Val::Str(id) if name.ends_with("Id") => {
            link.insert(id_type(name, owner), id.clone());
        }
        _ => {}
    }
}

// ---- sending and checking ----------------------------------------------------------------

/// A response as the checks need it.
struct Received {
    status: reqwest::StatusCode,
    json: Option<Value>,
    text: String,
}

async fn send(
    http: &reqwest::Client,
    app: &TestApp,
    request: &FuzzRequest,
) -> Result<Received, String> {
    let mut builder = http.request(request.method.clone(), app.url(&request.target));
    for (name, value) in &request.headers {
        match reqwest::header::HeaderValue::from_bytes(value) {
            Ok(value) => builder = builder.header(*name, value),
            Err(_) => continue,
        }
    }
    let response = builder
        .body(request.body.clone())
        .send()
        .await
        .map_err(|e| {
            assert!(!e.is_builder(), "the test built an invalid request: {e}");
            format!("no response (a panic or a dropped connection): {e}")
        })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("HTTP {status} with a body cut short: {e:?}"))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).ok();
    Ok(Received { status, json, text })
}

/// Returns what is wrong with a response: a 5xx, a 200 without JSON, or an error without
/// `extensions.code`.
fn response_problems(received: &Received) -> Vec<String> {
    let mut problems = Vec::new();
    if received.status.is_server_error() {
        problems.push(format!("HTTP {}", received.status));
    }
    match &received.json {
        None if received.status.is_success() => {
            problems.push(format!("HTTP {} without a JSON body", received.status));
        }
        None => {}
        Some(body) => {
            let responses: Vec<&Value> = match body {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for response in responses {
                if !response.is_object() {
                    problems.push("a response that is not a JSON object".into());
                    continue;
                }
                let errors = response.get("errors");
                if let Some(errors) = errors
                    && !errors.is_array()
                {
                    problems.push("`errors` is not a list".into());
                }
                for error in errors.and_then(Value::as_array).into_iter().flatten() {
                    let code = error["extensions"]["code"].as_str().unwrap_or_default();
                    if code.is_empty() {
                        problems.push(format!("error without extensions.code: {error}"));
                    }
                    if code == "INTERNAL_SERVER_ERROR" || code == "SERVICE_UNAVAILABLE" {
                        problems.push(format!("server fault: {error}"));
                    }
                }
            }
        }
    }
    problems
}

async fn healthy(http: &reqwest::Client, app: &TestApp) -> bool {
    match http.get(app.url("/healthz")).send().await {
        Ok(response) => response.status() == 200,
        Err(_) => false,
    }
}

/// Counts and failures of one run.
struct Report {
    backend: Backend,
    seed: u64,
    requests: usize,
    kinds: BTreeMap<&'static str, usize>,
    statuses: BTreeMap<u16, usize>,
    codes: BTreeMap<String, usize>,
    websocket_sessions: usize,
    failures: Vec<String>,
    failure_count: usize,
}

impl Report {
    fn new(backend: Backend, seed: u64, requests: usize) -> Report {
        Report {
            backend,
            seed,
            requests,
            kinds: BTreeMap::new(),
            statuses: BTreeMap::new(),
            codes: BTreeMap::new(),
            websocket_sessions: 0,
            failures: Vec::new(),
            failure_count: 0,
        }
    }

    fn fail(&mut self, index: usize, what: &str, problem: &str) {
        self.failure_count += 1;
        if self.failures.len() < MAX_REPORTED_FAILURES {
            self.failures.push(format!("#{index} {what}: {problem}"));
        }
    }

    fn record(&mut self, index: usize, request: &FuzzRequest, outcome: &Result<Received, String>) {
        *self.kinds.entry(request.kind).or_default() += 1;
        let received = match outcome {
            Ok(received) => received,
            Err(problem) => {
                self.fail(index, &request.describe(), problem);
                return;
            }
        };
        *self.statuses.entry(received.status.as_u16()).or_default() += 1;
        if let Some(body) = &received.json {
            let responses: Vec<&Value> = match body {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for error in responses
                .iter()
                .filter_map(|r| r.get("errors").and_then(Value::as_array))
                .flatten()
            {
                let code = error["extensions"]["code"].as_str().unwrap_or("(none)");
                *self.codes.entry(code.to_owned()).or_default() += 1;
            }
        }
        for problem in response_problems(received) {
            let detail = format!("{problem}; response: {}", shorten(&received.text, 800));
            self.fail(index, &request.describe(), &detail);
        }
    }

    fn websocket(&mut self, index: usize, problems: Vec<String>) {
        self.websocket_sessions += 1;
        for problem in problems {
            self.fail(index, "websocket", &problem);
        }
    }

    fn counts(&self, elapsed: Duration) -> String {
        format!(
            "fuzz {:?}: {} requests and {} WebSocket sessions in {:.1} s (seed {}); by kind {:?}; \
             by HTTP status {:?}; errors by code {:?}; {} failures",
            self.backend,
            self.requests,
            self.websocket_sessions,
            elapsed.as_secs_f64(),
            self.seed,
            self.kinds,
            self.statuses,
            self.codes,
            self.failure_count
        )
    }

    fn summary(&self, headline: &str) -> String {
        format!(
            "{headline} on {:?}: {} failures; reproduce with MOBILITY_FUZZ_SEED={} \
             MOBILITY_FUZZ_REQUESTS={} cargo test --test api fuzz\n{}",
            self.backend,
            self.failure_count,
            self.seed,
            self.requests,
            self.failures.join("\n")
        )
    }
}

// ---- WebSocket ---------------------------------------------------------------------------

/// Opens one WebSocket, sends a few generated subscriptions and junk messages, and returns
/// what went wrong: an error without a code, a server fault, or a connection dropped without
/// a close frame.
async fn fuzz_websocket(fuzzer: &mut Fuzzer, addr: std::net::SocketAddr) -> Vec<String> {
    let protocol = *fuzzer.rng.pick(&["graphql-transport-ws", "graphql-ws"]);
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .expect("WebSocket request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    let mut socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(e) => return vec![format!("{protocol}: WebSocket upgrade failed: {e}")],
    };

    let start = if protocol == "graphql-ws" {
        "start"
    } else {
        "subscribe"
    };
    let mut messages = Vec::new();
    match fuzzer.rng.below(8) {
        0 => {}
        1 => messages.push(json!({ "type": "connection_init", "payload": { "authorization": "Bearer mob_nope" } }).to_string()),
        2 => messages.push(json!({ "type": "connection_init", "payload": "not an object" }).to_string()),
        _ => messages.push(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {ADMIN_TOKEN}") } }).to_string()),
    }
    for i in 0..fuzzer.rng.range(1, 4) {
        let text = match fuzzer.rng.below(9) {
            0 => "not json".to_owned(),
            1 => json!({ "type": "unknown" }).to_string(),
            2 => json!({ "type": start, "id": "same", "payload": {} }).to_string(),
            3 => json!({ "type": "ping" }).to_string(),
            4 => {
                let document = fuzzer.special_document();
                json!({ "type": start, "id": format!("d{i}"), "payload": { "query": document } })
                    .to_string()
            }
            _ => {
                let (mut document, variables, _, _) = fuzzer.operation_of("subscription");
                if fuzzer.rng.chance(0.2) {
                    document = fuzzer.mangle(&document);
                }
                // Built as text, because the variables may hold numbers such as 1e309 that
                // `serde_json::Value` cannot.
                format!(
                    "{{\"type\":\"{start}\",\"id\":\"s{i}\",\"payload\":{{\"query\":{},\"variables\":{variables}}}}}",
                    Value::from(document)
                )
            }
        };
        messages.push(text);
    }
    let mut problems = Vec::new();
    for text in messages {
        if socket.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
    if fuzzer.rng.chance(0.2) {
        let _ = socket
            .send(Message::Binary(vec![0xff, 0x00, 0x7b].into()))
            .await;
    }
    let _ = socket.send(Message::Close(None)).await;

    // Read until the server closes, checking every message on the way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next()).await;
        let message = match next {
            Err(_) => {
                problems.push(format!(
                    "{protocol}: no close frame within 10 s of the client's"
                ));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                use tokio_tungstenite::tungstenite::Error;
                if !matches!(e, Error::ConnectionClosed | Error::AlreadyClosed) {
                    problems.push(format!("{protocol}: connection failed: {e}"));
                }
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    problems.push(format!("{protocol}: message is not JSON: {text}"));
                    continue;
                };
                let errors = match &value["payload"] {
                    Value::Array(errors) => errors.clone(),
                    payload => payload["errors"].as_array().cloned().unwrap_or_default(),
                };
                for error in errors {
                    let code = error["extensions"]["code"].as_str().unwrap_or_default();
                    if code.is_empty() || code == "INTERNAL_SERVER_ERROR" {
                        problems.push(format!("{protocol}: error without a client code: {value}"));
                    }
                }
            }
            Message::Close(frame) => {
                if let Some(frame) = frame
                    && u16::from(frame.code) == 1011
                {
                    problems.push(format!(
                        "{protocol}: closed with an internal error: {frame:?}"
                    ));
                }
            }
            _ => {}
        }
    }
    problems
}

// ---- consistency -------------------------------------------------------------------------

/// Sends a query with `token` and returns `data`, failing the test on any error.
async fn query_data(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> Value {
    let response = http
        .post(url)
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let body: Value = response.json().await.expect("JSON body");
    assert!(body.get("errors").is_none(), "unexpected errors: {body}");
    body["data"].clone()
}

/// Reads every trip and driver from the GraphQL endpoint at `url` and returns the broken
/// invariants. A trip's status must be the to-status of its last event, and it has at most one
/// pending offer, only while REQUESTED. An active trip has a driver, a driver has at most one
/// active trip, and each driver's `activeTripId` is that trip.
pub async fn consistency_problems(http: &reqwest::Client, url: &str, token: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut trips = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let data = query_data(
            http,
            url,
            token,
            "query($before: ID) { trips(before: $before, limit: 100) { id status \
             driver { id } events { kind toStatus } offers { id status } } }",
            json!({ "before": before }),
        )
        .await;
        let page = data["trips"].as_array().cloned().unwrap_or_default();
        let Some(last) = page.last() else { break };
        before = last["id"].as_str().map(str::to_owned);
        trips.extend(page);
    }

    let mut active_by_driver: HashMap<String, Vec<String>> = HashMap::new();
    for trip in &trips {
        let id = trip["id"].as_str().unwrap_or_default();
        let status = trip["status"].as_str().unwrap_or_default();
        let last = trip["events"].as_array().and_then(|events| events.last());
        match last {
            None => problems.push(format!("trip {id} has no events")),
            Some(event) if event["toStatus"] != status => problems.push(format!(
                "trip {id} is {status} but its last event goes to {}: {trip}",
                event["toStatus"]
            )),
            Some(_) => {}
        }
        let pending = trip["offers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|offer| offer["status"] == "PENDING")
            .count();
        if pending > 1 {
            problems.push(format!("trip {id} has {pending} pending offers: {trip}"));
        }
        if pending > 0 && status != "REQUESTED" {
            problems.push(format!(
                "trip {id} is {status} with a pending offer: {trip}"
            ));
        }
        let active = matches!(status, "ACCEPTED" | "ARRIVED" | "STARTED");
        match trip["driver"]["id"].as_str() {
            Some(driver) if active => active_by_driver
                .entry(driver.to_owned())
                .or_default()
                .push(id.to_owned()),
            None if active => problems.push(format!("trip {id} is {status} without a driver")),
            _ => {}
        }
    }

    for (driver, active) in &active_by_driver {
        if active.len() > 1 {
            problems.push(format!("driver {driver} holds active trips {active:?}"));
        }
    }

    let mut after: Option<String> = None;
    let mut drivers = 0;
    loop {
        let data = query_data(
            http,
            url,
            token,
            "query($after: ID) { drivers(after: $after, limit: 100) { id \
             presence { activeTripId } } }",
            json!({ "after": after }),
        )
        .await;
        let page = data["drivers"].as_array().cloned().unwrap_or_default();
        let Some(last) = page.last() else { break };
        after = last["id"].as_str().map(str::to_owned);
        for driver in &page {
            drivers += 1;
            let id = driver["id"].as_str().unwrap_or_default();
            let expected = active_by_driver.get(id).and_then(|trips| trips.first());
            let actual = driver["presence"]["activeTripId"].as_str();
            if actual != expected.map(String::as_str) {
                problems.push(format!(
                    "driver {id} has activeTripId {actual:?} but its active trip is {expected:?}"
                ));
            }
        }
    }
    println!(
        "consistency: {} trips, {} drivers, {} with an active trip",
        trips.len(),
        drivers,
        active_by_driver.len()
    );
    problems
}

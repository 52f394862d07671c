//! The committed `schema.graphql` matches the schema the server builds, so clients generating
//! code from the file see the API that runs.

/// Command that rewrites `schema.graphql` from the code.
const REGENERATE: &str = "cargo run -- schema > schema.graphql";

#[test]
fn schema_file_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}; create it with `{REGENERATE}`"));
    let built = mobility::schema::sdl();
    if committed == built {
        return;
    }
    let first_difference = committed
        .lines()
        .zip(built.lines())
        .position(|(file, code)| file != code)
        .unwrap_or_else(|| committed.lines().count().min(built.lines().count()));
    let line = |text: &str| {
        text.lines()
            .nth(first_difference)
            .unwrap_or("<end of file>")
            .to_owned()
    };
    panic!(
        "{path} is out of date with the schema in the code; run `{REGENERATE}` and commit the \
         result. First difference at line {}:\n  file: {}\n  code: {}",
        first_difference + 1,
        line(&committed),
        line(&built),
    );
}

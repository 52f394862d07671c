//! A bound on how deeply a GraphQL document nests brackets, checked before anything parses it.
//!
//! The parser of async-graphql 7.2.1 recurses once per nested list or object value and has no
//! limit for values. A document with about 600 nested `[` overflowed the 2 MiB stack of a Tokio
//! worker in a debug build, which aborted the process. Selection sets have a parser limit, but
//! the scan counts them too, so one bound covers every kind of nesting.

/// Deepest nesting of `{`, `[` and `(` accepted. The deepest useful document (a selection 12
/// levels deep, as [`super::MAX_DEPTH`] allows, under a mutation with a list of input objects)
/// nests about 20.
pub const MAX_NESTING: usize = 64;

/// Returns an error message when `query` nests brackets deeper than [`MAX_NESTING`]. Brackets
/// inside strings, block strings and comments do not count, and unbalanced brackets are left
/// to the parser to report.
pub fn check(query: &str) -> Result<(), String> {
    let bytes = query.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // An escaped triple quote does not end a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!(
                        "the document nests brackets more than {MAX_NESTING} levels deep at \
                         byte {i}; at most {MAX_NESTING} are allowed"
                    ));
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, depth: usize) -> String {
        format!("{{ f(a: {}1{}) }}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_limit_passes() {
        // The selection set and the argument list take two levels.
        assert_eq!(check(&nested("[", "]", MAX_NESTING - 2)), Ok(()));
        assert_eq!(check(&nested("{a: ", "}", MAX_NESTING - 2)), Ok(()));
    }

    #[test]
    fn nesting_over_the_limit_fails() {
        assert!(check(&nested("[", "]", MAX_NESTING - 1)).is_err());
        assert!(check(&nested("{a: ", "}", 10_000)).is_err());
        assert!(check(&"{ a ".repeat(10_000)).is_err());
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let deep = "[".repeat(1_000);
        assert_eq!(check(&format!("{{ f(a: \"{deep}\") }}")), Ok(()));
        assert_eq!(check(&format!("{{ f(a: \"\\\"{deep}\") }}")), Ok(()));
        assert_eq!(
            check(&format!("{{ f(a: \"\"\"{deep}\\\"\"\"{deep}\"\"\") }}")),
            Ok(())
        );
        assert_eq!(check(&format!("# {deep}\n{{ f }}")), Ok(()));
    }

    #[test]
    fn unbalanced_brackets_are_left_to_the_parser() {
        assert_eq!(check("}}}} { f }"), Ok(()));
        assert_eq!(check("{ f(a: \"unterminated) }"), Ok(()));
    }
}

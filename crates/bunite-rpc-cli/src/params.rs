//! Where the params of `call` and `stream` come from (the command's `[JSON]` and each
//! `--then METHOD [JSON]`): the JSON text itself, `@FILE` (read from FILE), or `-` / `@-`
//! (read from stdin, for at most one of them), as grpcurl's `-d @` reads stdin.
//!
//! Only an unquoted leading `@` names a file: a JSON string that starts with `@` is quoted
//! on the command line (`'"@x"'`), so it is never taken for a file name, and no JSON text
//! starts with `@` or is `-` alone. A file named `-` is `@./-`.

use std::path::Path;

use bunite_rpc::Value;
use tokio::io::AsyncReadExt;

use crate::json;

/// Where one call's params come from.
#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    /// No params: undefined.
    None,
    /// The JSON text on the command line.
    Text(&'a str),
    /// `@FILE`.
    File(&'a Path),
    /// `-` or `@-`.
    Stdin,
}

impl<'a> Source<'a> {
    fn of(arg: Option<&'a str>) -> Self {
        match arg {
            None => Source::None,
            Some("-" | "@-") => Source::Stdin,
            Some(text) => match text.strip_prefix('@') {
                Some(file) => Source::File(Path::new(file)),
                None => Source::Text(text),
            },
        }
    }
}

/// The params of each call, in order, given `(method, [JSON])` per call; an error message
/// (a usage error) naming the method and, for `@FILE`, the file. Stdin is read at most once:
/// a second call that asks for it is refused before anything is read.
pub async fn read(calls: &[(&str, Option<&str>)]) -> Result<Vec<Value>, String> {
    let sources: Vec<Source<'_>> = calls.iter().map(|(_, arg)| Source::of(*arg)).collect();
    let mut from_stdin = calls
        .iter()
        .zip(&sources)
        .filter(|(_, s)| **s == Source::Stdin)
        .map(|((method, _), _)| *method);
    if let (Some(first), Some(second)) = (from_stdin.next(), from_stdin.next()) {
        return Err(format!(
            "the params of {first:?} and of {second:?} both read stdin (- or @-): at most \
             one call's params may"
        ));
    }
    let mut params = Vec::with_capacity(calls.len());
    for ((method, _), source) in calls.iter().zip(sources) {
        params.push(read_one(method, source).await?);
    }
    Ok(params)
}

/// One call's params.
async fn read_one(method: &str, source: Source<'_>) -> Result<Value, String> {
    let (bytes, from) = match source {
        Source::None => return Ok(Value::Undefined),
        Source::Text(text) => {
            return json::parse(text.as_bytes())
                .map_err(|e| format!("the params of {method:?} are not JSON: {e}"));
        }
        Source::File(path) => {
            let bytes = tokio::fs::read(path).await.map_err(|e| {
                format!(
                    "the params of {method:?}: cannot read {}: {e}",
                    path.display()
                )
            })?;
            (bytes, format!("in {}", path.display()))
        }
        Source::Stdin => {
            let mut bytes = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| format!("the params of {method:?}: cannot read stdin: {e}"))?;
            (bytes, "from stdin".to_owned())
        }
    };
    json::parse(&bytes).map_err(|e| format!("the params of {method:?} {from} are not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unquoted_leading_at_names_a_file() {
        assert_eq!(Source::of(None), Source::None);
        assert_eq!(Source::of(Some("-")), Source::Stdin);
        assert_eq!(Source::of(Some("@-")), Source::Stdin);
        assert_eq!(
            Source::of(Some("@p.json")),
            Source::File(Path::new("p.json"))
        );
        assert_eq!(Source::of(Some("@./-")), Source::File(Path::new("./-")));
        assert_eq!(Source::of(Some(r#""@x""#)), Source::Text(r#""@x""#));
        assert_eq!(Source::of(Some("-1")), Source::Text("-1"));
    }

    #[tokio::test]
    async fn a_second_call_reading_stdin_is_refused_before_anything_is_read() {
        let err = read(&[("a", Some("-")), ("b", Some("1")), ("c", Some("@-"))])
            .await
            .unwrap_err();
        assert!(err.contains(r#""a" and of "c" both read stdin"#), "{err}");
    }

    #[tokio::test]
    async fn a_literal_string_that_starts_with_at_is_json() {
        let params = read(&[("a", Some(r#""@x""#)), ("b", None)]).await.unwrap();
        assert_eq!(params, [Value::from("@x"), Value::Undefined]);
    }
}

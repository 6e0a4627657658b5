//! `bitrush decode <bencoded>`: one line of compact JSON on stdout; bad input
//! gives a non-zero exit and one `error:` line on stderr, never a panic.

mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Runs `bitrush decode <input>`; on success with exactly one line of
/// stdout returns that line, else describes what went wrong.
fn decode_ok(input: &OsStr) -> Result<String, String> {
    let out = run_bitrush(decode_args(input));
    if !out.status.success() || stderr_of(&out).contains("panicked") {
        return Err(format!("expected success\n{}", dump(&out)));
    }
    let s = stdout_of(&out);
    if !(s.ends_with('\n') && s.matches('\n').count() == 1) {
        return Err(format!("stdout must be exactly one line\n{}", dump(&out)));
    }
    Ok(s.trim_end_matches('\n').to_string())
}

/// `decode <input>`, with `--` first when the input looks like an option.
fn decode_args(input: &OsStr) -> Vec<&OsStr> {
    if input.as_bytes().starts_with(b"-") {
        vec![OsStr::new("decode"), OsStr::new("--"), input]
    } else {
        vec![OsStr::new("decode"), input]
    }
}

#[track_caller]
fn check_decodes(cases: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (input, want) in cases {
        match decode_ok(OsStr::new(input)) {
            Ok(got) if got == *want => {}
            Ok(got) => failures.push(format!("decode {input:?}: got {got}, want {want}")),
            Err(e) => failures.push(format!("decode {input:?}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn decodes_the_documented_examples() {
    check_decodes(&[
        ("5:hello", r#""hello""#),
        ("i52e", "52"),
        ("i-52e", "-52"),
        ("l5:helloi52ee", r#"["hello",52]"#),
        ("d3:foo3:bar5:helloi52ee", r#"{"foo":"bar","hello":52}"#),
    ]);
}

#[test]
fn decodes_edge_values() {
    check_decodes(&[
        ("0:", r#""""#),
        ("i0e", "0"),
        ("le", "[]"),
        ("de", "{}"),
        ("lli1eeli2ei3eee", "[[1],[2,3]]"),
        ("d1:ald1:bleeee", r#"{"a":[{"b":[]}]}"#),
        ("i9223372036854775807e", "9223372036854775807"),
        ("i-9223372036854775808e", "-9223372036854775808"),
        // JSON escaping of quotes and backslashes.
        (r#"4:a"\b"#, r#""a\"\\b""#),
        // Multi-byte UTF-8: the length counts bytes.
        ("2:\u{e9}", "\"\u{e9}\""),
        ("11:hello world", r#""hello world""#),
    ]);
}

#[test]
fn rejects_malformed_input_with_one_error_line() {
    let cases: &[&str] = &[
        "i03e",                   // leading zero
        "i-0e",                   // negative zero
        "5:abc",                  // string shorter than its length
        "l5:hello",               // unterminated list
        "i1ei2e",                 // trailing data
        "99999999999999999999:x", // absurd length
        "",                       // empty input
        "ie",                     // empty integer
        "i-e",                    // sign only
        "i12",                    // unterminated integer
        "d3:fooe",                // key without value
        "di1ei2ee",               // non-string key
        "x",                      // not bencode at all
        "-1:a",                   // negative length
        "e",                      // stray end
    ];
    let mut failures = Vec::new();
    for input in cases {
        let out = run_bitrush(decode_args(OsStr::new(input)));
        if let Err(e) = check_one_line_error(&out) {
            failures.push(format!("decode {input:?}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "these inputs were not rejected cleanly:\n{}",
        failures.join("\n")
    );
}

#[test]
fn rejects_100000_unterminated_nested_lists_without_crashing() {
    let input = "l".repeat(100_000);
    let out = run_bitrush(["decode", input.as_str()]);
    assert_one_line_error(&out);
}

#[test]
fn deep_but_valid_nesting_does_not_crash() {
    // 60,000 levels: "l"*n + "e"*n stays under Linux's 128 KiB limit for a
    // single argument. A depth limit (clean error) or a correct answer are
    // both fine; a crash (stack overflow) or a panic is not.
    let n = 60_000;
    let input = format!("{}{}", "l".repeat(n), "e".repeat(n));
    let out = run_bitrush(["decode", input.as_str()]);
    if out.status.success() {
        let want = format!("{}{}\n", "[".repeat(n), "]".repeat(n));
        assert!(
            stdout_of(&out) == want,
            "wrong output for deep nesting\n{}",
            dump(&out)
        );
    } else {
        assert_one_line_error(&out);
    }
}

#[test]
fn non_utf8_bytes_do_not_crash() {
    // A byte string that is not UTF-8, passed as raw argv bytes. How it is
    // rendered (or whether the argument parser refuses it) is up to bitrush;
    // it must print one line or fail with an `error:`, never panic or die
    // from a signal.
    let input = OsStr::from_bytes(b"2:\xff\xfe");
    let out = run_bitrush([OsStr::new("decode"), input]);
    if out.status.success() {
        assert!(
            !stderr_of(&out).contains("panicked"),
            "panicked\n{}",
            dump(&out)
        );
        assert_eq!(stdout_of(&out).lines().count(), 1, "{}", dump(&out));
    } else {
        assert_cli_error(&out);
    }
}

//! RESP2, the Redis protocol: commands go out as arrays of bulk strings; answers are simple
//! strings, errors, integers, bulk strings or arrays (either may be null).

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$3\r\nfoo` (`None`: `$-1`, the null bulk string)
    Bulk(Option<Vec<u8>>),
    /// `*2 …` (`None`: `*-1`)
    Array(Option<Vec<Value>>),
}

impl Value {
    /// What the answer is, for messages (never its content).
    pub fn shape(&self) -> String {
        match self {
            Value::Simple(_) => "a simple string".into(),
            Value::Error(m) => format!("error {m}"),
            Value::Int(i) => format!("integer {i}"),
            Value::Bulk(None) => "null".into(),
            Value::Bulk(Some(b)) => format!("{} bytes", b.len()),
            Value::Array(None) => "null array".into(),
            Value::Array(Some(v)) => format!("an array of {}", v.len()),
        }
    }
}

/// Appends `args` as one command.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A malformed answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Decodes one answer from the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// answer and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, Malformed> {
    decode_at(buf, 0, 0)
}

/// Deeper nesting than any command of Ferry's returns is refused, so a hostile server cannot
/// exhaust the stack.
const MAX_DEPTH: usize = 8;
/// Bulk strings beyond Redis's own 512 MB limit are refused.
const MAX_BULK: usize = 512 * 1024 * 1024;

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn int(text: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Malformed(format!(
                "not an integer: {:?}",
                String::from_utf8_lossy(text)
            ))
        })
}

fn decode_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed("answer nested too deeply".into()));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    let lossy = || String::from_utf8_lossy(text).into_owned();
    let v = match kind {
        b'+' => (Value::Simple(lossy()), next),
        b'-' => (Value::Error(lossy()), next),
        b':' => (Value::Int(int(text)?), next),
        b'$' => {
            let n = int(text)?;
            if n < 0 {
                (Value::Bulk(None), next)
            } else {
                let n = usize::try_from(n).map_err(|_| Malformed("bulk length".into()))?;
                if n > MAX_BULK {
                    return Err(Malformed(format!("bulk string of {n} bytes")));
                }
                if buf.len() < next + n + 2 {
                    return Ok(None);
                }
                if &buf[next + n..next + n + 2] != b"\r\n" {
                    return Err(Malformed("bulk string not terminated".into()));
                }
                (
                    Value::Bulk(Some(buf[next..next + n].to_vec())),
                    next + n + 2,
                )
            }
        }
        b'*' => {
            let n = int(text)?;
            if n < 0 {
                (Value::Array(None), next)
            } else {
                let mut items = Vec::new();
                let mut pos = next;
                for _ in 0..n {
                    match decode_at(buf, pos, depth + 1)? {
                        Some((v, p)) => {
                            items.push(v);
                            pos = p;
                        }
                        None => return Ok(None),
                    }
                }
                (Value::Array(Some(items)), pos)
            }
        }
        other => {
            return Err(Malformed(format!(
                "unknown answer type {:?}",
                other as char
            )));
        }
    };
    // The position after the answer (absolute): nested answers continue from it.
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
    }

    #[test]
    fn every_answer_type_decodes_and_reports_its_length() {
        let cases: Vec<(&[u8], Value)> = vec![
            (b"+OK\r\n", Value::Simple("OK".into())),
            (b"-ERR no\r\n", Value::Error("ERR no".into())),
            (b":-7\r\n", Value::Int(-7)),
            (b"$-1\r\n", Value::Bulk(None)),
            (b"$4\r\na\r\nb\r\n", Value::Bulk(Some(b"a\r\nb".to_vec()))),
            (b"*-1\r\n", Value::Array(None)),
            (
                b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n",
                Value::Array(Some(vec![
                    Value::Bulk(Some(b"0".to_vec())),
                    Value::Array(Some(vec![Value::Bulk(Some(b"k".to_vec()))])),
                ])),
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(decode(wire), Ok(Some((want, wire.len()))));
            // Every strict prefix asks for more bytes.
            for cut in 0..wire.len() {
                assert_eq!(decode(&wire[..cut]), Ok(None), "{wire:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn hostile_answers_are_refused_not_trusted() {
        assert!(decode(b"$abc\r\n").is_err());
        assert!(decode(b"$3\r\nabcXY").is_err());
        assert!(decode(b"?x\r\n").is_err());
        assert!(decode(b"$999999999999\r\n").is_err());
        let deep: Vec<u8> = b"*1\r\n".repeat(20);
        assert!(decode(&deep).is_err());
    }
}

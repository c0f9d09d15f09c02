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

/// The length of the one RESP2 or RESP3 frame at the start of `buf` (`Ok(None)`: more bytes
/// needed), without decoding it: what the endpoint's proxy needs to pass answers through and
/// know where each ends. An attribute (`|`) counts with the frame it annotates. Whether the
/// frame is a push (`>`: out of band, not an answer) is `buf[0] == b'>'`.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    frame_at(buf, 0, 0)
}

fn frame_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, Malformed> {
    if depth > 32 {
        return Err(Malformed("frame nested too deeply".into()));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, at + 1) else {
        if buf.len() - at > 64 * 1024 {
            return Err(Malformed("a header line longer than 64 KiB".into()));
        }
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(next)),
        b'$' | b'!' | b'=' => {
            let n = int(text)?;
            if n < 0 {
                return Ok(Some(next));
            }
            let n = usize::try_from(n).map_err(|_| Malformed("bulk length".into()))?;
            if n > MAX_BULK {
                return Err(Malformed(format!("bulk string of {n} bytes")));
            }
            Ok((buf.len() >= next + n + 2).then_some(next + n + 2))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = int(text)?;
            if n < 0 {
                return Ok(Some(next));
            }
            let items = usize::try_from(n).map_err(|_| Malformed("length".into()))?
                * if matches!(kind, b'%' | b'|') { 2 } else { 1 };
            let mut pos = next;
            for _ in 0..items {
                match frame_at(buf, pos, depth + 1)? {
                    Some(end) => pos = end,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                return frame_at(buf, pos, depth + 1);
            }
            Ok(Some(pos))
        }
        other => Err(Malformed(format!("unknown frame type {:?}", other as char))),
    }
}

/// A command's arguments.
pub type Args = Vec<Vec<u8>>;

/// One command from a client at the start of `buf`: its arguments and how many bytes it took
/// (`Ok(None)`: more bytes needed). Clients send arrays of bulk strings; an inline command (a
/// plain line, as `redis-cli` and telnet send) is split on spaces.
pub fn command(buf: &[u8]) -> Result<Option<(Args, usize)>, Malformed> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => match decode(buf)? {
            None => Ok(None),
            Some((Value::Array(Some(items)), used)) => items
                .into_iter()
                .map(|v| match v {
                    Value::Bulk(Some(b)) => Ok(b),
                    _ => Err(Malformed("a command argument is not a bulk string".into())),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|args| Some((args, used))),
            Some(_) => Err(Malformed("a command is not an array".into())),
        },
        Some(_) => {
            let Some((text, used)) = line(buf, 0) else {
                if buf.len() > 64 * 1024 {
                    return Err(Malformed("an inline command longer than 64 KiB".into()));
                }
                return Ok(None);
            };
            let args = text
                .split(|b| *b == b' ')
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            Ok(Some((args, used)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resp3_frame_is_measured_whole_and_a_partial_one_waits() {
        let frames: &[&[u8]] = &[
            b"+OK\r\n",
            b"_\r\n",
            b"#t\r\n",
            b",3.14\r\n",
            b"(12345678901234567890\r\n",
            b"!5\r\nERR x\r\n",
            b"=8\r\ntxt:abcd\r\n",
            b"$-1\r\n",
            b"%1\r\n$1\r\na\r\n:1\r\n",
            b"~2\r\n:1\r\n:2\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$2\r\nok\r\n",
            b"*2\r\n*1\r\n$0\r\n\r\n%0\r\n",
        ];
        for f in frames {
            let mut buf = f.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(
                frame_len(&buf),
                Ok(Some(f.len())),
                "{:?}",
                String::from_utf8_lossy(f)
            );
            for cut in 0..f.len() {
                assert_eq!(
                    frame_len(&f[..cut]),
                    Ok(None),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(f)
                );
            }
        }
        assert!(frame_len(b"?what\r\n").is_err());
    }

    #[test]
    fn client_commands_come_as_arrays_or_inline_lines() {
        assert_eq!(
            command(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n+"),
            Ok(Some((vec![b"GET".to_vec(), b"k".to_vec()], 20)))
        );
        assert_eq!(
            command(b"PING  hello\r\n"),
            Ok(Some((vec![b"PING".to_vec(), b"hello".to_vec()], 13)))
        );
        assert_eq!(command(b"*2\r\n$3\r\nGET"), Ok(None));
        assert!(command(b"*1\r\n:1\r\n").is_err());
    }

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

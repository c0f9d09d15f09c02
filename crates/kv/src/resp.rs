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
    let scanned = FrameScanner::default().scan(buf)?;
    Ok(scanned.done.then_some(scanned.consumed))
}

/// Frames nested deeper than this are refused.
const MAX_FRAME_DEPTH: usize = 32;
/// A header or simple-string line longer than this is refused.
const MAX_LINE: usize = 64 * 1024;

/// Follows one frame from a server across reads, without decoding it and without scanning a
/// byte twice: each call takes the bytes that follow those already consumed, and says how many
/// more belong to the frame (those may be passed on at once, so an answer of any size streams
/// through in constant memory) and whether the frame has ended. A line cut by the end of the
/// read is left unconsumed until its end arrives.
#[derive(Debug, Default)]
pub struct FrameScanner {
    /// Elements still expected by each open aggregate, innermost last.
    pending: Vec<usize>,
    /// Bytes of a bulk payload (and its CRLF) still to pass.
    skip: usize,
}

/// What one [`FrameScanner::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes at the start of the buffer that belong to the frame and are understood.
    pub consumed: usize,
    /// The frame ends with them (the scanner is ready for the next frame).
    pub done: bool,
}

impl FrameScanner {
    /// Scans `buf`, which starts where the previous call's consumed bytes ended.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Scanned, Malformed> {
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let take = self.skip.min(buf.len() - pos);
                pos += take;
                self.skip -= take;
                if self.skip > 0 {
                    return Ok(Scanned {
                        consumed: pos,
                        done: false,
                    });
                }
                if self.element_done() {
                    return Ok(Scanned {
                        consumed: pos,
                        done: true,
                    });
                }
                continue;
            }
            let Some(&kind) = buf.get(pos) else {
                return Ok(Scanned {
                    consumed: pos,
                    done: false,
                });
            };
            let Some((text, next)) = line(buf, pos + 1) else {
                if buf.len() - pos > MAX_LINE {
                    return Err(Malformed("a header line longer than 64 KiB".into()));
                }
                return Ok(Scanned {
                    consumed: pos,
                    done: false,
                });
            };
            pos = next;
            if self.header(kind, text)? && self.element_done() {
                return Ok(Scanned {
                    consumed: pos,
                    done: true,
                });
            }
        }
    }

    /// Takes one header line; true when the element it starts is already complete.
    fn header(&mut self, kind: u8, text: &[u8]) -> Result<bool, Malformed> {
        match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(true),
            b'$' | b'!' | b'=' => {
                let n = int(text)?;
                if n < 0 {
                    return Ok(true);
                }
                let n = usize::try_from(n).map_err(|_| Malformed("bulk length".into()))?;
                if n > MAX_BULK {
                    return Err(Malformed(format!("bulk string of {n} bytes")));
                }
                self.skip = n + 2;
                Ok(false)
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = int(text)?;
                if n < 0 {
                    return Ok(true);
                }
                let n = usize::try_from(n).map_err(|_| Malformed("length".into()))?;
                // A map's entries are pairs; an attribute's pairs are followed by the frame it
                // annotates, counted here as one more element.
                let items = match kind {
                    b'%' => n.checked_mul(2),
                    b'|' => n.checked_mul(2).and_then(|m| m.checked_add(1)),
                    _ => Some(n),
                }
                .ok_or_else(|| Malformed("length".into()))?;
                if items == 0 {
                    return Ok(true);
                }
                if self.pending.len() >= MAX_FRAME_DEPTH {
                    return Err(Malformed("frame nested too deeply".into()));
                }
                self.pending.push(items);
                Ok(false)
            }
            other => Err(Malformed(format!("unknown frame type {:?}", other as char))),
        }
    }

    /// One element has ended: counts it against the innermost aggregate, closing each one it
    /// fills. True when the whole frame has ended.
    fn element_done(&mut self) -> bool {
        while let Some(left) = self.pending.last_mut() {
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.pending.pop();
        }
        true
    }
}

/// A command's arguments.
pub type Args = Vec<Vec<u8>>;

/// What a client may send in one command, as Redis bounds it (`proto-max-bulk-len`, and its
/// tighter bounds for a client that has not logged in: redis/redis#9588, #12989).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Arguments of one command.
    pub max_args: usize,
    /// Bytes of one argument.
    pub max_bulk: usize,
}

/// Before AUTH: 10 arguments of 16 KiB at most (Redis's own unauthenticated limits).
pub const UNAUTHENTICATED: Limits = Limits {
    max_args: 10,
    max_bulk: 16 * 1024,
};

/// After AUTH: Redis's defaults (1,048,576 arguments, 512 MB each).
pub const AUTHENTICATED: Limits = Limits {
    max_args: 1024 * 1024,
    max_bulk: MAX_BULK,
};

/// The longest header line of a command (`*N` or `$N`): an integer's digits and a sign.
const MAX_HEADER: usize = 24;

/// A header line at `at` (`*N` / `$N`, its kind byte checked by the caller): its number and
/// the position after it; `None` while incomplete. A line that runs past [`MAX_HEADER`]
/// without ending is malformed, however many bytes follow: the scan is bounded.
fn header(buf: &[u8], at: usize, what: &str) -> Result<Option<(i64, usize)>, Malformed> {
    let rest = &buf[at + 1..buf.len().min(at + 1 + MAX_HEADER)];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((int(&rest[..end])?, at + 1 + end + 2))),
        None if rest.len() >= MAX_HEADER => Err(Malformed(format!("invalid {what} length"))),
        None => Ok(None),
    }
}

/// One command from `buf` (a RESP array of bulk strings, or an inline command), within
/// `limits`, and the bytes it used; `None` while incomplete. Only the command's own headers
/// are scanned, and an argument count or length past the limits is refused before its bytes
/// arrive, so a client cannot make the proxy buffer or scan more than the limits allow.
pub fn command_within(buf: &[u8], limits: Limits) -> Result<Option<(Args, usize)>, Malformed> {
    CommandParser::default().next(buf, limits)
}

/// A command parsed across reads: the arguments of a command not yet complete are kept, so
/// each byte of it is examined once however many reads it takes to arrive (re-parsing it from
/// its start after every read would cost the square of its length).
#[derive(Debug, Default)]
pub struct CommandParser {
    /// Arguments parsed so far of the command under way.
    args: Args,
    /// Its argument count, once its header is read.
    want: Option<usize>,
    /// Where its next argument starts, from the command's first byte.
    at: usize,
}

impl CommandParser {
    /// The next command from `buf`, which must start where the command under way started
    /// (the caller consumes a command's bytes only once it is returned), and the bytes it
    /// used; `None` while incomplete, with the progress kept.
    pub fn next(&mut self, buf: &[u8], limits: Limits) -> Result<Option<(Args, usize)>, Malformed> {
        match buf.first() {
            None => Ok(None),
            Some(b'*') => self.array(buf, limits),
            Some(_) => {
                *self = Self::default();
                inline(buf, limits)
            }
        }
    }

    fn array(&mut self, buf: &[u8], limits: Limits) -> Result<Option<(Args, usize)>, Malformed> {
        let want = match self.want {
            Some(n) => n,
            None => {
                let Some((n, pos)) = header(buf, 0, "multibulk")? else {
                    return Ok(None);
                };
                if n > limits.max_args as i64 {
                    return Err(Malformed(format!(
                        "invalid multibulk length ({n} arguments, at most {})",
                        limits.max_args
                    )));
                }
                let n = usize::try_from(n.max(0)).unwrap_or(0);
                (self.want, self.at) = (Some(n), pos);
                n
            }
        };
        while self.args.len() < want {
            let pos = self.at;
            match buf.get(pos) {
                None => return Ok(None),
                Some(b'$') => {}
                Some(_) => return Err(Malformed("expected '$', got something else".into())),
            }
            let Some((len, next)) = header(buf, pos, "bulk")? else {
                return Ok(None);
            };
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= limits.max_bulk)
                .ok_or_else(|| {
                    Malformed(format!(
                        "invalid bulk length ({len}, at most {})",
                        limits.max_bulk
                    ))
                })?;
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            if &buf[next + len..next + len + 2] != b"\r\n" {
                return Err(Malformed("bulk string not terminated".into()));
            }
            self.args.push(buf[next..next + len].to_vec());
            self.at = next + len + 2;
        }
        let used = self.at;
        let args = std::mem::take(&mut self.args);
        *self = Self::default();
        Ok(Some((args, used)))
    }
}

/// An inline command (a line of words), bounded.
fn inline(buf: &[u8], limits: Limits) -> Result<Option<(Args, usize)>, Malformed> {
    let cap = if limits.max_args < AUTHENTICATED.max_args {
        limits.max_bulk
    } else {
        64 * 1024
    };
    let Some((text, used)) = line(&buf[..buf.len().min(cap + 2)], 0) else {
        if buf.len() > cap {
            return Err(Malformed(format!(
                "an inline command longer than {} KiB",
                cap / 1024
            )));
        }
        return Ok(None);
    };
    let args: Args = text
        .split(|b| *b == b' ')
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if args.len() > limits.max_args {
        return Err(Malformed("invalid multibulk length".into()));
    }
    Ok(Some((args, used)))
}

/// One command with an authenticated client's limits (see [`command_within`]).
pub fn command(buf: &[u8]) -> Result<Option<(Args, usize)>, Malformed> {
    command_within(buf, AUTHENTICATED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_parsed_within_its_limits_and_refused_past_them() {
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n";
        let (args, used) = command(set).expect("ok").expect("whole");
        assert_eq!((args.len(), used), (3, set.len()));
        for cut in 0..set.len() {
            assert_eq!(
                command(&set[..cut]),
                Ok(None),
                "a partial command waits ({cut})"
            );
        }
        // A header of digits with no end is refused after 24 bytes, not scanned forever.
        let mut digits = b"*".to_vec();
        digits.extend(std::iter::repeat_n(b'9', 100_000));
        assert!(command(&digits).is_err());
        assert_eq!(command(b"*99999"), Ok(None), "a short header still waits");
        // Before AUTH: 10 arguments of 16 KiB.
        assert!(command_within(b"*11\r\n", UNAUTHENTICATED).is_err());
        assert!(command_within(b"*100000000\r\n$1\r\na\r\n", UNAUTHENTICATED).is_err());
        assert!(command_within(b"*2\r\n$16385\r\n", UNAUTHENTICATED).is_err());
        assert_eq!(
            command_within(b"*2\r\n$16384\r\n", UNAUTHENTICATED),
            Ok(None),
            "16 KiB is allowed"
        );
        assert!(command(b"*1\r\n$536870913\r\n").is_err(), "past 512 MB");
        assert!(
            command(b"*1\r\n+x\r\n").is_err(),
            "an argument that is not a bulk string"
        );
        // Inline: bounded, before AUTH by 16 KiB.
        let long = vec![b'a'; 20 * 1024];
        assert!(command_within(&long, UNAUTHENTICATED).is_err());
        assert_eq!(command(&long), Ok(None));
        assert_eq!(
            command(b"PING hello\r\n").expect("ok").expect("whole").0,
            vec![b"PING".to_vec(), b"hello".to_vec()]
        );
    }

    #[test]
    fn a_command_fed_a_byte_at_a_time_is_parsed_once_and_whole() {
        let mut wire = Vec::new();
        let big = vec![b'x'; 3000];
        encode(&mut wire, &[b"MSET", b"a", b"1", b"b", &big]);
        encode(&mut wire, &[b"PING"]);
        let mut p = CommandParser::default();
        let mut got = Vec::new();
        let mut start = 0;
        for end in 1..=wire.len() {
            while let Some((args, used)) = p.next(&wire[start..end], AUTHENTICATED).expect("ok") {
                got.push(args);
                start += used;
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), 5);
        assert_eq!(got[0][4], big);
        assert_eq!(got[1], vec![b"PING".to_vec()]);
        assert_eq!(start, wire.len());
    }

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
    fn a_frame_scanned_a_byte_at_a_time_is_consumed_as_it_arrives() {
        let frames: &[&[u8]] = &[
            b"$10\r\n0123456789\r\n",
            b"*3\r\n$3\r\nabc\r\n*2\r\n:1\r\n$-1\r\n%1\r\n+k\r\n$1\r\nv\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$2\r\nok\r\n",
            b">2\r\n$7\r\nmessage\r\n$0\r\n\r\n",
            b"*0\r\n",
        ];
        for f in frames {
            let mut scanner = FrameScanner::default();
            let mut pending: Vec<u8> = Vec::new();
            let mut passed = 0;
            for (i, byte) in f.iter().enumerate() {
                pending.push(*byte);
                let got = scanner.scan(&pending).expect("well formed");
                pending.drain(..got.consumed);
                passed += got.consumed;
                assert_eq!(
                    got.done,
                    i + 1 == f.len(),
                    "{:?} at {i}",
                    String::from_utf8_lossy(f)
                );
                // Nothing but a cut line is ever held back.
                assert!(pending.len() <= 8, "{} bytes held", pending.len());
            }
            assert_eq!(passed, f.len());
            assert!(pending.is_empty());
        }
        // A bulk payload passes through as it comes, whatever its size.
        let mut scanner = FrameScanner::default();
        let got = scanner.scan(b"$1000000\r\nabc").expect("header");
        assert_eq!(
            got,
            Scanned {
                consumed: 13,
                done: false
            }
        );
        let got = scanner.scan(&vec![b'x'; 999_997]).expect("payload");
        assert_eq!(
            got,
            Scanned {
                consumed: 999_997,
                done: false
            }
        );
        let got = scanner.scan(b"\r\n+NEXT\r\n").expect("end");
        assert_eq!(
            got,
            Scanned {
                consumed: 2,
                done: true
            }
        );
        // Refusals: a header line without end, nesting without end.
        let long = [b"+".as_slice(), &vec![b'a'; 70 * 1024]].concat();
        assert!(FrameScanner::default().scan(&long).is_err());
        let deep = b"*1\r\n".repeat(40);
        assert!(FrameScanner::default().scan(&deep).is_err());
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

//! What the captured vectors' `.txt` files say: a parser for the Python literals in them, the
//! handler-received messages they describe, the kind each should decode to, and the
//! control-port replies.

use m2wsgi::codec::Opcode;
use m2wsgi::MessageKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// A parser for the Python literals in the .txt files.

/// A Python literal: `b'..'` and `'..'` are both kept as bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Py {
    Bytes(Vec<u8>),
    Str(Vec<u8>),
    List(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

impl Py {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Py::Bytes(b) | Py::Str(b) => b,
            other => panic!("not a string: {other:?}"),
        }
    }
}

struct PyParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> PyParser<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s: s.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> u8 {
        self.s.get(self.pos).copied().unwrap_or(0)
    }

    fn ws(&mut self) {
        while self.peek() == b' ' {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) {
        self.ws();
        assert_eq!(self.peek() as char, c as char, "at {}", self.pos);
        self.pos += 1;
    }

    fn value(&mut self) -> Py {
        self.ws();
        match self.peek() {
            b'b' => {
                self.pos += 1;
                Py::Bytes(self.string())
            }
            b'\'' | b'"' => Py::Str(self.string()),
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    if self.peek() == b']' {
                        self.pos += 1;
                        return Py::List(items);
                    }
                    items.push(self.value());
                    self.ws();
                    if self.peek() == b',' {
                        self.pos += 1;
                    }
                }
            }
            b'{' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    if self.peek() == b'}' {
                        self.pos += 1;
                        return Py::Dict(items);
                    }
                    let k = self.value();
                    self.expect(b':');
                    let v = self.value();
                    items.push((k, v));
                    self.ws();
                    if self.peek() == b',' {
                        self.pos += 1;
                    }
                }
            }
            c => panic!("unexpected {:?} at {}", c as char, self.pos),
        }
    }

    /// A quoted string with Python's escapes (`\\`, `\'`, `\"`, `\n`, `\r`, `\t`, `\xHH`, ...).
    fn string(&mut self) -> Vec<u8> {
        let q = self.peek();
        assert!(q == b'\'' || q == b'"');
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek();
            self.pos += 1;
            match c {
                0 => panic!("unterminated string"),
                b'\\' => {
                    let e = self.peek();
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'0' => out.push(0),
                        b'a' => out.push(7),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'v' => out.push(11),
                        b'x' => {
                            let h = std::str::from_utf8(&self.s[self.pos..self.pos + 2]).unwrap();
                            out.push(u8::from_str_radix(h, 16).unwrap());
                            self.pos += 2;
                        }
                        other => out.push(other),
                    }
                }
                c if c == q => return out,
                c => out.push(c),
            }
        }
    }
}

pub(crate) fn py(s: &str) -> Py {
    let mut p = PyParser::new(s);
    let v = p.value();
    p.ws();
    assert_eq!(p.pos, p.s.len(), "trailing text in {s:?}");
    v
}

// ---------------------------------------------------------------------------------------------
// The .txt files.

/// One `HANDLER RECEIVED -> NAME.bin` block.
#[derive(Debug)]
pub(crate) struct Expected {
    pub(crate) bin: String,
    pub(crate) size: usize,
    pub(crate) repr: Vec<u8>,
    pub(crate) sender: Vec<u8>,
    pub(crate) id: u64,
    pub(crate) path: Vec<u8>,
    /// Header name → values in order (one for a plain string).
    pub(crate) headers: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    /// Whether the dict's keys were Python str (a JSON-protocol handler).
    pub(crate) json: bool,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub(crate) fn read(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every handler-received message described in every scenario's `.txt`.
pub(crate) fn expectations() -> Vec<Expected> {
    let mut out = Vec::new();
    let mut txts: Vec<_> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    txts.sort();
    for txt in txts {
        let text = std::fs::read_to_string(&txt).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix("HANDLER RECEIVED -> ") else {
                continue;
            };
            let (bin, size) = rest.split_once(" (").unwrap();
            let size: usize = size.split(' ').next().unwrap().parse().unwrap();
            let repr = py(lines[i + 1]).bytes().to_vec();
            let parsed = lines[i + 2].trim().strip_prefix("parsed: ").unwrap();
            let mut fields = parsed.splitn(3, ' ');
            let mut field = |name: &str| {
                let f = fields.next().unwrap();
                py(f.strip_prefix(name).unwrap()).bytes().to_vec()
            };
            let sender = field("uuid=");
            let id: u64 = String::from_utf8(field("id=")).unwrap().parse().unwrap();
            let path = field("path=");
            let hdrs = py(lines[i + 3].trim().strip_prefix("headers=").unwrap());
            let body = py(lines[i + 4].trim().strip_prefix("body=").unwrap())
                .bytes()
                .to_vec();
            let Py::Dict(items) = hdrs else {
                panic!("headers of {bin} are not a dict")
            };
            let json = items.iter().any(|(k, _)| matches!(k, Py::Str(_)));
            let mut headers = BTreeMap::new();
            for (k, v) in items {
                let values = match v {
                    Py::List(vs) => vs.iter().map(|v| v.bytes().to_vec()).collect(),
                    v => vec![v.bytes().to_vec()],
                };
                assert!(
                    headers.insert(k.bytes().to_vec(), values).is_none(),
                    "{bin}: a key twice"
                );
            }
            out.push(Expected {
                bin: bin.to_string(),
                size,
                repr,
                sender,
                id,
                path,
                headers,
                json,
                body,
            });
        }
    }
    out
}

/// The kind a message with these headers should have (Mongrel2 1.12's upper-case keys and `@*` notices).
pub(crate) fn expected_kind(e: &Expected) -> MessageKind {
    let h = |k: &str| e.headers.get(k.as_bytes()).map(|v| v[0].clone());
    let num = |k: &str| h(k).map(|v| String::from_utf8(v).unwrap().parse::<u64>().unwrap());
    match h("METHOD").as_deref() {
        None => MessageKind::UploadStream {
            offset: num("UPLOAD_STREAM").unwrap(),
            done: h("UPLOAD_STREAM_DONE").is_some(),
        },
        Some(b"JSON") if e.path == b"@*" => match num("DOWNLOAD_CREDITS") {
            Some(bytes) => MessageKind::Credits { bytes },
            None => MessageKind::Disconnect,
        },
        Some(b"JSON") => MessageKind::Json,
        Some(b"XML") => MessageKind::Xml,
        Some(b"WEBSOCKET_HANDSHAKE") => MessageKind::WebSocketHandshake,
        Some(b"WEBSOCKET") => {
            let f = h("FLAGS").unwrap();
            let f = u8::from_str_radix(std::str::from_utf8(&f[2..]).unwrap(), 16).unwrap();
            MessageKind::WebSocketFrame {
                opcode: Opcode::from_u8(f & 0xf).unwrap(),
                flags: f,
            }
        }
        Some(_) => match (h("x-mongrel2-upload-start"), h("x-mongrel2-upload-done")) {
            (Some(s), Some(d)) => MessageKind::UploadDone {
                start: s.into(),
                done: d.into(),
            },
            (Some(p), None) => MessageKind::UploadStart { path: p.into() },
            (None, None) => MessageKind::Request,
            (None, Some(_)) => unreachable!("no vector has done without start"),
        },
    }
}

/// `(NAME.bin, repr bytes)` for every reply in control.txt.
pub(crate) fn control_replies() -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(data_dir().join("control.txt")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("reply -> "))
        .map(|l| {
            let (name, repr) = l.split_once(": ").unwrap();
            (name.to_string(), py(repr).bytes().to_vec())
        })
        .collect()
}

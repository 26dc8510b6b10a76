//! Uploads end to end through a real Mongrel2 and the `upload` example: async uploads through a
//! temp file, forged temp-file headers, uploads with no upload directory, streamed uploads.
#![cfg(feature = "runtime")]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::mongrel2::{curl, Handler, Mongrel2};
use support::process::{crc32, pattern, Proc};

const LIMIT: usize = 4096;

fn mongrel2(stream: bool) -> Mongrel2 {
    let mut b = Mongrel2::builder()
        .handler("/upload", &Handler::tcp("app"))
        .setting("limits.content_length", LIMIT)
        .setting("upload.temp_store", "/tmp/upload.XXXXXX");
    if stream {
        b = b.setting("upload.stream", 1);
    }
    b.start()
}

fn upload_example(m2: &Mongrel2, upload_dir: bool) -> Proc {
    upload_example_with(m2, upload_dir, &[])
}

fn upload_example_with(m2: &Mongrel2, upload_dir: bool, extra: &[&str]) -> Proc {
    let chroot = m2.host_path("/").display().to_string();
    let mut args = vec![
        m2.send_spec("app"),
        m2.recv_spec("app"),
        "--send-ident",
        m2.send_ident("app"),
        "--chroot",
        &chroot,
    ];
    if upload_dir {
        args.extend(["--upload-dir", "/tmp"]);
    }
    args.extend_from_slice(extra);
    Proc::example("upload", &args)
}

fn temp_files(m2: &Mongrel2) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(m2.host_path("/tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("upload."))
    });
    v
}

fn wait_no_temp_files(m2: &Mongrel2) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = temp_files(m2);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_body(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    format!("@{}", p.display())
}

fn post(m2: &Mongrel2, body_arg: &str, extra: &[&str]) -> (u16, String) {
    let url = m2.url("/upload");
    let mut args = vec!["-s", "-w", "\n%{http_code}", "--data-binary", body_arg];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.trim_end().to_string())
}

#[test]
fn async_upload_is_read_from_the_temp_file_and_deleted() {
    let m2 = mongrel2(false);
    let _up = upload_example(&m2, true);
    let scratch = m2.chroot().join("client");
    std::fs::create_dir_all(&scratch).unwrap();

    // Small: inline body, same code path for the handler.
    let small = pattern(100, 1);
    let (code, text) = post(&m2, &write_body(&scratch, "small", &small), &[]);
    assert_eq!(
        (code, text.as_str()),
        (
            200,
            format!("size=100 crc32={:08x}", crc32(&small)).as_str()
        )
    );

    // 1 MiB + 1 byte, far above limits.content_length: through the temp file.
    let big = pattern((1 << 20) + 1, 2);
    let (code, text) = post(&m2, &write_body(&scratch, "big", &big), &[]);
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        text,
        format!("size={} crc32={:08x}", big.len(), crc32(&big))
    );
    assert!(wait_no_temp_files(&m2).is_empty(), "temp file left behind");

    // A chunked request body goes the same way (Mongrel2 de-chunks it into the file).
    let (code, text) = post(
        &m2,
        &write_body(&scratch, "big", &big),
        &["-H", "Transfer-Encoding: chunked"],
    );
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        text,
        format!("size={} crc32={:08x}", big.len(), crc32(&big))
    );
    assert!(wait_no_temp_files(&m2).is_empty(), "temp file left behind");
}

#[test]
fn spoofed_upload_headers_get_400_and_touch_nothing() {
    let m2 = mongrel2(false);
    let _up = upload_example(&m2, true);
    let scratch = m2.chroot().join("client");
    std::fs::create_dir_all(&scratch).unwrap();
    // A victim file inside the chroot's upload directory, and one outside it.
    let victim = m2.host_path("/tmp/upload.victim");
    std::fs::write(&victim, b"do not read or delete me").unwrap();
    let passwd = std::fs::metadata("/etc/passwd").unwrap();
    let small = write_body(&scratch, "small", b"hello");

    for headers in [
        vec!["-H", "X-Mongrel2-Upload-Start: /etc/passwd"],
        vec![
            "-H",
            "X-Mongrel2-Upload-Start: /etc/passwd",
            "-H",
            "X-Mongrel2-Upload-Done: /etc/passwd",
        ],
        vec![
            "-H",
            "X-Mongrel2-Upload-Start: /tmp/upload.victim",
            "-H",
            "X-Mongrel2-Upload-Done: /tmp/upload.victim",
        ],
        vec!["-H", "X-Mongrel2-Upload-Done: /tmp/upload.victim"],
        vec!["-H", "X-Mongrel2-Upload-Start: /tmp/../etc/passwd"],
    ] {
        let (code, text) = post(&m2, &small, &headers);
        assert_eq!(code, 400, "{headers:?}: {text}");
    }
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"do not read or delete me",
        "victim untouched"
    );
    let after = std::fs::metadata("/etc/passwd").unwrap();
    assert_eq!(after.len(), passwd.len());
    assert_eq!(after.modified().unwrap(), passwd.modified().unwrap());

    // A forged header on a genuine large upload does not redirect the handler either: Mongrel2
    // replaces it with the real temp file's path.
    let big = pattern(100_000, 3);
    let (code, text) = post(
        &m2,
        &write_body(&scratch, "big", &big),
        &["-H", "X-Mongrel2-Upload-Start: /etc/passwd"],
    );
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        text,
        format!("size={} crc32={:08x}", big.len(), crc32(&big))
    );
    std::fs::remove_file(&victim).unwrap();
    assert!(wait_no_temp_files(&m2).is_empty(), "temp file left behind");
}

#[test]
fn async_upload_without_upload_dir_is_413() {
    let m2 = mongrel2(false);
    let up = upload_example(&m2, false);
    let scratch = m2.chroot().join("client");
    std::fs::create_dir_all(&scratch).unwrap();
    let big = pattern(200_000, 4);
    let (code, text) = post(&m2, &write_body(&scratch, "big", &big), &[]);
    assert_eq!(code, 413, "{text}");
    assert!(up.wait_for_log("refusing async uploads with 413", Duration::from_secs(2)));
    // Mongrel2 may already have written the whole body to its temp file: without an upload
    // directory the handler cannot tell a genuine path from a forged one, so it deletes nothing
    // (the 413 log line says to configure the directory).
    // Small bodies still work.
    let (code, _) = post(&m2, &write_body(&scratch, "small", b"abc"), &[]);
    assert_eq!(code, 200);
    // A client-sent done header with no start is answered (400), never left hanging.
    let (code, text) = post(
        &m2,
        &write_body(&scratch, "small", b"abc"),
        &["-H", "X-Mongrel2-Upload-Done: /tmp/upload.forged"],
    );
    assert_eq!(code, 400, "{text}");
}

#[test]
fn streamed_upload_is_read_completely_with_credits() {
    let m2 = mongrel2(true);
    let _up = upload_example(&m2, true);
    let scratch = m2.chroot().join("client");
    std::fs::create_dir_all(&scratch).unwrap();
    for (len, chunked) in [(3 << 20, false), (LIMIT + 1, false), (1 << 20, true)] {
        let big = pattern(len, len as u64);
        let extra: &[&str] = if chunked {
            &["-H", "Transfer-Encoding: chunked"]
        } else {
            &[]
        };
        let (code, text) = post(&m2, &write_body(&scratch, "big", &big), extra);
        assert_eq!(code, 200, "{len} chunked={chunked}: {text}");
        assert_eq!(
            text,
            format!("size={} crc32={:08x}", big.len(), crc32(&big))
        );
    }
    assert!(temp_files(&m2).is_empty(), "streamed uploads write no file");
}

/// Starts a streamed upload of `LIMIT * 4` bytes, sends only its first kilobyte, and returns
/// the open connection.
fn stalled_upload(m2: &Mongrel2) -> TcpStream {
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        LIMIT * 4
    )
    .unwrap();
    s.write_all(&[b'x'; 1024]).unwrap();
    s
}

fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_stalled_streamed_upload_gets_408_and_frees_its_worker() {
    let m2 = mongrel2(true);
    let up = upload_example_with(
        &m2,
        true,
        &[
            "--workers",
            "2",
            "--stream-idle-ms",
            "700",
            "--max-streamed-uploads",
            "1",
        ],
    );
    let mut first = stalled_upload(&m2);
    assert!(
        up.wait_for_log(
            "reading a body of Some(16384) bytes",
            Duration::from_secs(10)
        ),
        "{}",
        up.log()
    );
    // One stalled upload is the most this server reads at once: a second one is refused at
    // once, and plain requests are still served by the free worker.
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        let mut s = stalled_upload(&m2);
        let text = read_all(&mut s);
        if text.starts_with("HTTP/1.1 503") || Instant::now() > deadline {
            break text;
        }
    };
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    let (code, text) = post(&m2, "small", &[]);
    assert_eq!(code, 200, "{text}");
    // The stalled one gets 408 once it has sent nothing for the idle limit.
    let t = Instant::now();
    let text = read_all(&mut first);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // And its worker is free again: another streamed upload is read completely.
    let scratch = m2.chroot().join("client");
    std::fs::create_dir_all(&scratch).unwrap();
    let big = pattern(LIMIT * 3, 7);
    let (code, text) = post(&m2, &write_body(&scratch, "big", &big), &[]);
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        text,
        format!("size={} crc32={:08x}", big.len(), crc32(&big))
    );
}

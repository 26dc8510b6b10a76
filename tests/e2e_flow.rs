//! Large responses to slow clients through a real Mongrel2 and the `streaming` example: with
//! download flow control (credits), and without it (Mongrel2's 16-message deliver queue).
#![cfg(feature = "runtime")]

mod support;

use support::mongrel2::{curl, Handler, Mongrel2};
use support::process::Proc;

fn setup(flow_control: bool) -> (Mongrel2, Proc) {
    let mut b = Mongrel2::builder().handler("/stream", &Handler::tcp("app"));
    if flow_control {
        b = b.setting("download.flow_control", 1);
    }
    let m2 = b.start();
    let mut args = vec![
        m2.send_spec("app").to_string(),
        m2.recv_spec("app").to_string(),
        "--send-ident".into(),
        m2.send_ident("app").to_string(),
        "--workers".into(),
        "2".into(),
    ];
    if flow_control {
        args.push("--flow-control".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proc::example("streaming", &args);
    (m2, p)
}

/// Downloads `bytes` at `rate` within `max_time` seconds; returns (size, status) and, if
/// `check` is set, verifies every byte of the example's pattern.
fn download(m2: &Mongrel2, bytes: u64, rate: &str, max_time: u64, check: bool) -> (u64, u16) {
    let url = m2.url(&format!("/stream?bytes={bytes}"));
    let file = m2.chroot().join("download.bin");
    let out_arg = if check {
        file.display().to_string()
    } else {
        "/dev/null".to_string()
    };
    let max_time = max_time.to_string();
    let out = curl(&[
        "-s",
        "--limit-rate",
        rate,
        "--max-time",
        &max_time,
        "-o",
        &out_arg,
        "-w",
        "%{size_download} %{http_code}",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (size, code) = text.split_once(' ').unwrap_or(("0", "0"));
    if check {
        let data = std::fs::read(&file).unwrap();
        for (p, &b) in data.iter().enumerate() {
            let want = b'a' + ((p % 65536) % 26) as u8;
            assert_eq!(b, want, "byte {p} of the download is wrong");
        }
        std::fs::remove_file(&file).unwrap();
    }
    (size.parse().unwrap_or(0), code.parse().unwrap_or(0))
}

#[test]
fn download_flow_control_large_response_to_slow_client() {
    let (m2, p) = setup(true);
    const N: u64 = 24 << 20;
    // 24 MiB at 16 MB/s: the handler must wait for credits most of the time.
    let (size, code) = download(&m2, N, "16M", 30, true);
    assert_eq!((size, code), (N, 200), "{}", p.log());
    assert!(
        !m2.error_log().contains("closing them"),
        "{}",
        m2.error_log()
    );
}

#[test]
fn no_flow_control_256mib_to_slow_client_arrives_whole() {
    let (m2, p) = setup(false);
    const N: u64 = 256 << 20;
    let (size, code) = download(&m2, N, "200M", 30, false);
    assert_eq!((size, code), (N, 200), "{}", p.log());
    assert!(
        !m2.error_log().contains("Error sending raw message"),
        "Mongrel2 cut the client off: {}",
        m2.error_log()
    );
}

#[test]
#[ignore = "1 GiB through Mongrel2 (about 10 s, 2-3 GiB of memory): cargo test --test e2e_flow -- --ignored"]
fn no_flow_control_1gib_to_slow_client_arrives_whole() {
    let (m2, p) = setup(false);
    const N: u64 = 1 << 30;
    let (size, code) = download(&m2, N, "200M", 60, false);
    assert_eq!((size, code), (N, 200), "{}", p.log());
    assert!(!m2.error_log().contains("Error sending raw message"));
}

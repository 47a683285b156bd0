//! `key-connector dev`: the printed curl commands work as printed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::skip_or_fail;

const BINARY: &str = env!("CARGO_BIN_EXE_key-connector");

fn dev_prints_curl_commands_that_show_404_then_200_then_200() {
    if Command::new("curl").arg("--version").output().is_err() {
        skip_or_fail!("curl is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut child = Command::new(BINARY)
        .args(["dev", "--port", "0", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = String::new();
        let mut rules = 0;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("=====") {
                rules += 1;
                if rules == 3 {
                    let _ = sender.send(std::mem::take(&mut banner));
                }
            }
        }
    });
    let banner = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("dev printed its banner");
    assert!(banner.contains("NOT FOR PRODUCTION"), "{banner}");
    assert!(banner.contains("127.0.0.1"), "{banner}");

    let token_line = banner
        .lines()
        .find(|l| l.starts_with("TOKEN="))
        .expect("a TOKEN= line");
    let curls: Vec<String> = {
        // Join continuation lines, keep only the /user-keys commands, in order.
        let mut commands = Vec::new();
        let mut current = String::new();
        for line in banner.lines() {
            if line.starts_with("curl") || !current.is_empty() {
                current.push_str(line.trim_end_matches('\\'));
                if !line.ends_with('\\') {
                    commands.push(std::mem::take(&mut current));
                }
            }
        }
        commands
            .into_iter()
            .filter(|c| c.contains("/user-keys"))
            .collect()
    };
    assert_eq!(curls.len(), 3, "{banner}");

    let mut statuses = Vec::new();
    for curl in &curls {
        let script = format!("{token_line}\n{curl} -s -o /dev/null -w '%{{http_code}}'");
        let output = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        statuses.push(String::from_utf8_lossy(&output.stdout).to_string());
    }
    assert_eq!(statuses, ["404", "200", "200"], "{banner}");

    // Binds to localhost only.
    assert!(data_dir.join("key.pfx").exists());
    assert!(data_dir.join("keys.db").exists());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "dev did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

crate::tests! {
    sync: [
        dev_prints_curl_commands_that_show_404_then_200_then_200,
    ],
}

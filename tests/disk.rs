//! The ATA disk end to end: `bt86 run --disk IMG` against QEMU with the
//! same image attached as the primary IDE master, the image each leaves
//! behind, images bt86 must refuse, and what survives when bt86 is killed
//! or stopped by a signal in the middle of the guest's writes.
//!
//! The guest is `guests/disk.c`. Its test image is generated here, so the
//! tests recompute every checksum the guest prints and every byte the
//! guest writes, and a run that agrees with QEMU but is wrong still fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{diff, guest, qemu, run_bt86, run_qemu, GUEST_PASS};

/// Sectors in the check image: 2 MiB, so 4 cylinders of 16 heads and 63
/// sectors per track, and room for every address the guest uses.
const CHECK_SECTORS: usize = 4096;
const SECTOR: usize = 512;

/// A fresh directory for one test's images, under Cargo's scratch space
/// for integration tests.
fn scratch(test: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("disk-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// The check image: bytes from a multiplicative hash of their offset, with
/// no partition-table signature (so both monitors guess the geometry from
/// the size alone).
fn check_image() -> Vec<u8> {
    let mut image: Vec<u8> = (0..CHECK_SECTORS * SECTOR)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    image[510] = 0;
    image[511] = 0;
    image
}

/// The byte the guest's check mode writes at offset `j` of sector `lba`.
fn pattern(lba: usize, j: usize) -> u8 {
    ((lba * 7 + j) ^ 0xA5) as u8
}

/// Every sector the check mode writes: 3000-3002 by LBA, C/H/S 2/5/10
/// ((2 * 16 + 5) * 63 + 9 = 2340), 3500-3505 with WRITE MULTIPLE, and
/// 3584-3839 with a sector count of 0.
fn check_writes() -> Vec<usize> {
    let mut lbas = vec![3000, 3001, 3002, 2340];
    lbas.extend(3500..3506);
    lbas.extend(3584..3840);
    lbas
}

/// The check image as the guest must leave it.
fn check_image_after() -> Vec<u8> {
    let mut image = check_image();
    for lba in check_writes() {
        for j in 0..SECTOR {
            image[lba * SECTOR + j] = pattern(lba, j);
        }
    }
    image
}

/// FNV-1a, as the guest computes it.
fn fnv(data: &[u8]) -> u32 {
    data.iter().fold(0x811C_9DC5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The checksum lines the guest must print, computed from the image.
fn expected_checksum_lines(image: &[u8]) -> Vec<String> {
    let sectors = |first: usize, n: usize| &image[first * SECTOR..(first + n) * SECTOR];
    let mut lines: Vec<String> = (0..4)
        .map(|lba| format!("read lba {lba}: fnv={:08x} irqs=1", fnv(sectors(lba, 1))))
        .collect();
    lines.push(format!(
        "read lba 5-7: fnv={:08x} irqs=3",
        fnv(sectors(5, 3))
    ));
    lines.push(format!(
        "read C/H/S 1/2/3 x2: fnv={:08x} irqs=2",
        fnv(sectors(1136, 2))
    ));
    lines.push(format!(
        "read 1000 with count 0: fnv={:08x} irqs=256",
        fnv(sectors(1000, 256))
    ));
    lines.push(format!(
        "read multiple 2000 x20: fnv={:08x} irqs=3",
        fnv(sectors(2000, 20))
    ));
    lines
}

/// Fails unless `image` equals `want`, naming the first differing sector.
fn assert_image(what: &str, image: &[u8], want: &[u8]) {
    assert_eq!(image.len(), want.len(), "{what}: the image changed size");
    if let Some(i) = image.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: the image differs from the expected one first in sector {} (byte {:#x}: {:#04x}, expected {:#04x})",
            i / SECTOR,
            i % SECTOR,
            image[i],
            want[i]
        );
    }
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("scratch paths are UTF-8")
}

#[test]
fn disk_guest_matches_qemu_and_leaves_the_expected_image() {
    let dir = scratch("check");
    let elf = guest("disk");
    let bt86_img = dir.join("bt86.img");
    std::fs::write(&bt86_img, check_image()).unwrap();

    let (out, status) = run_bt86(&elf, &["--disk", path_arg(&bt86_img)]);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(
        status, GUEST_PASS,
        "bt86 exited with {status}; output:\n{text}"
    );
    assert!(text.contains("disk: done\n"), "{text}");
    for line in expected_checksum_lines(&check_image()) {
        assert!(
            text.contains(&line),
            "bt86's output lacks {line:?}:\n{text}"
        );
    }
    assert!(text.contains("read back 3000 x3: matches"), "{text}");
    assert_image(
        "bt86",
        &std::fs::read(&bt86_img).unwrap(),
        &check_image_after(),
    );

    if qemu().is_none() {
        return;
    }
    let qemu_img = dir.join("qemu.img");
    std::fs::write(&qemu_img, check_image()).unwrap();
    let drive = format!(
        "file={},format=raw,if=ide,index=0,media=disk",
        path_arg(&qemu_img)
    );
    let (want, want_status) = run_qemu(&elf, &["-drive", &drive]);
    assert_eq!(
        want_status,
        GUEST_PASS,
        "the reference run failed: QEMU exited with {want_status}; output:\n{}",
        String::from_utf8_lossy(&want)
    );
    if out != want {
        panic!(
            "bt86 differs from QEMU\n{}",
            diff("qemu", &want, "bt86", &out)
        );
    }
    assert_image(
        "QEMU",
        &std::fs::read(&qemu_img).unwrap(),
        &check_image_after(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_read_only_disk_aborts_the_guests_writes() {
    let dir = scratch("readonly");
    let img = dir.join("ro.img");
    std::fs::write(&img, check_image()).unwrap();
    let arg = format!("{},readonly", path_arg(&img));
    let (out, status) = run_bt86(&guest("disk"), &["--disk", &arg]);
    let text = String::from_utf8_lossy(&out);
    // The guest reads as before, then its first write ends with ABRT
    // (status DRDY | ERR) and it gives up with EXIT_FAIL.
    assert!(text.contains("read multiple 2000 x20"), "{text}");
    assert!(
        text.contains("write: unexpected status 0x41 after 1 sectors"),
        "{text}"
    );
    assert_eq!(status, 35, "{text}");
    assert_image("read-only", &std::fs::read(&img).unwrap(), &check_image());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_images_are_refused_before_the_guest_runs() {
    let dir = scratch("bad");
    let short = dir.join("short.img");
    std::fs::write(&short, vec![0u8; 1000]).unwrap();
    let empty = dir.join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.join("missing.img");
    let short_ro = format!("{},readonly", path_arg(&short));
    // (--disk argument, what the message must name, phrases it must hold)
    let cases: Vec<(String, String, Vec<&str>)> = vec![
        (
            path_arg(&missing).to_string(),
            path_arg(&missing).to_string(),
            vec!["cannot open the disk image", "check that the file exists"],
        ),
        (
            path_arg(&short).to_string(),
            path_arg(&short).to_string(),
            vec![
                "1000 bytes",
                "not a whole number of 512-byte sectors",
                "truncate -s 1024",
            ],
        ),
        (
            short_ro,
            path_arg(&short).to_string(),
            vec!["not a whole number of 512-byte sectors"],
        ),
        (
            path_arg(&empty).to_string(),
            path_arg(&empty).to_string(),
            vec!["is empty"],
        ),
        (
            ",readonly".to_string(),
            ",readonly".to_string(),
            vec!["names no file"],
        ),
    ];
    for (arg, names, says) in cases {
        let run = Command::new(env!("CARGO_BIN_EXE_bt86"))
            .args(["run", "--disk", &arg])
            .arg(guest("disk"))
            .stdin(Stdio::null())
            .output()
            .expect("run bt86");
        let stderr = String::from_utf8_lossy(&run.stderr);
        let context = format!(
            "--disk {arg}: status {:?}, stderr:\n{stderr}",
            run.status.code()
        );
        assert_eq!(run.status.code(), Some(2), "{context}");
        assert!(run.stdout.is_empty(), "the guest ran: {context}");
        assert_eq!(stderr.lines().count(), 1, "{context}");
        assert!(stderr.starts_with("bt86: "), "{context}");
        assert!(
            stderr.contains(&names),
            "the message does not name {names}: {context}"
        );
        for phrase in says {
            assert!(
                stderr.contains(phrase),
                "the message does not say {phrase:?}: {context}"
            );
        }
    }
    assert_eq!(
        std::fs::read(&short).unwrap(),
        vec![0u8; 1000],
        "a refused image is left alone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sectors in the crash image: 8 MiB, far more than the guest writes
/// before the test stops it.
const CRASH_SECTORS: usize = 16384;

/// Starts the guest's crash mode on a zeroed image in `dir`.
fn start_crash_guest(dir: &Path) -> (Child, PathBuf) {
    let img = dir.join("crash.img");
    std::fs::write(&img, vec![0u8; CRASH_SECTORS * SECTOR]).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_bt86"))
        .args([
            "run",
            "--timeout",
            "120",
            "--disk",
            path_arg(&img),
            "--append",
            "mode=crash",
        ])
        .arg(guest("disk"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bt86");
    (child, img)
}

/// Reads the guest's output until the `n`-th "flushed N" line and returns
/// that N, or fails if the output ends first or takes too long.
fn wait_for_flushes(lines: &mut impl Iterator<Item = std::io::Result<String>>, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    for line in lines {
        let line = line.expect("read bt86's output");
        if let Some(count) = line.strip_prefix("flushed ") {
            seen += 1;
            if seen == n {
                return count.parse().expect("flushed N");
            }
        }
        assert!(
            Instant::now() < deadline,
            "the guest is too slow: {seen} flushes in 60 s"
        );
        assert!(
            line != "crash: done",
            "the guest finished before the test stopped it"
        );
    }
    panic!("bt86's output ended after {seen} flushes, before the {n}th");
}

/// Fails unless sectors 1..=`flushed` of `image` hold the stamps the
/// crash mode writes: "B8T6", the sector number, and a pattern.
fn assert_flushed_sectors(image: &[u8], flushed: usize, what: &str) {
    for lba in 1..=flushed {
        let s = &image[lba * SECTOR..(lba + 1) * SECTOR];
        let ok = &s[..4] == b"B8T6"
            && s[4..8] == (lba as u32).to_le_bytes()
            && s[8..]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (lba * 13 + (i + 8) * 7) as u8);
        assert!(ok, "{what}: sector {lba} was flushed (the guest printed \"flushed {flushed}\") but is not on the disk");
    }
    assert!(
        image[..SECTOR].iter().all(|&b| b == 0),
        "{what}: sector 0 was never written"
    );
}

/// A number from 0 to `n - 1`, different in every run.
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() % n as u64) as usize
}

#[test]
fn sigkill_after_a_flush_loses_nothing_that_was_flushed() {
    let dir = scratch("sigkill");
    let (mut child, img) = start_crash_guest(&dir);
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    // Some time after the n-th completed flush, at a random point of the
    // writes that follow it.
    let n = 5 + random_below(120);
    let flushed = wait_for_flushes(&mut lines, n);
    std::thread::sleep(Duration::from_micros(random_below(20_000) as u64));
    // Flushes printed meanwhile count too: read what is already there.
    child.kill().expect("SIGKILL bt86");
    let status = child.wait().expect("wait for bt86");
    let mut last = flushed;
    for line in lines.map_while(Result::ok) {
        if let Some(count) = line.strip_prefix("flushed ") {
            last = count.parse().expect("flushed N");
        }
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "bt86 ended before the kill: {status:?}"
    );
    let image = std::fs::read(&img).unwrap();
    assert_flushed_sectors(&image, last, &format!("killed after flush line {n}"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigint_and_sigterm_flush_and_exit_with_the_shell_status() {
    // (signal name for kill(1), expected exit status)
    for (signal, want) in [("INT", 130), ("TERM", 143)] {
        let dir = scratch(&format!("sig{signal}"));
        let (mut child, img) = start_crash_guest(&dir);
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let flushed = wait_for_flushes(&mut lines, 3);
        let killed = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(killed.success());
        // Keep reading, so that bt86 never blocks on a full pipe.
        let drain = std::thread::spawn(move || lines.count());
        let output = child.wait_with_output().expect("wait for bt86");
        let _ = drain.join();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(want), "SIG{signal}: {stderr}");
        assert!(
            stderr.contains("stopped by signal"),
            "SIG{signal}: {stderr}"
        );
        let image = std::fs::read(&img).unwrap();
        assert_flushed_sectors(&image, flushed, &format!("SIG{signal}"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

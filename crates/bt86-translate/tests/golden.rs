//! Golden translations: for each interesting guest unit, the expected
//! disassembly, the translated code, the exit stubs and the map from TC
//! offsets to guest EIPs, stored as text in `tests/golden/*.txt` and read
//! in review like Cranelift's precise-output filetests.
//!
//! Each file starts with its input:
//! ```text
//! # what the case shows
//! eip: 0x00100000
//! code: fa 01 d8 c3
//! ----
//! ```
//! and everything after the `----` line is the expected output. Run with
//! `BT86_BLESS=1` to rewrite the expected output from the translator, then
//! read the diff.

use std::path::Path;

use bt86_translate::{trace, BufferMemory, ExitKind, Mode, TranslationCache};

fn parse_hex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect()
}

/// Translates every unit reachable by straight-line fall-through and by
/// direct branch targets inside the code, in order of first reference.
fn render(eip: u32, code: &[u8]) -> String {
    let mut mem = BufferMemory::new();
    let mut tc = TranslationCache::new(&mut mem);
    let end = eip + code.len() as u32;
    let mut todo = vec![eip];
    let mut done = std::collections::BTreeSet::new();
    let mut out = String::new();
    while let Some(at) = todo.pop() {
        if !done.insert(at) {
            continue;
        }
        let (id, _) = tc.translate(&mut mem, &mut (eip, code), at, Mode::default());
        let u = tc.unit(id);
        let bytes = mem.at(u.tc, u.tc_len as usize).to_vec();
        out += &trace::format_unit(u.guest_start, &u.insns, u.end, &bytes, u.tc.0);
        out += "  exits:\n";
        let mut next = Vec::new();
        for e in u.first_exit..u.first_exit + u.exit_count {
            let rec = tc.exit(bt86_translate::ExitId(e)).unwrap();
            let what = match rec.kind {
                ExitKind::Branch { target } => {
                    if (eip..end).contains(&target) {
                        next.push(target);
                    }
                    format!("branch to {target:#010x}")
                }
                ExitKind::Callout { eip, reason, .. } => format!("callout for {eip:#010x} ({})", reason.class()),
                ExitKind::Fault { eip, exception } => format!("raise {exception} at {eip:#010x}"),
            };
            out += &format!("    exit {e} at {:#010x}: {what}\n", rec.stub.0);
        }
        out += "  map:\n";
        for m in &u.map {
            out += &format!("    +{:#06x} -> {:#010x} {:?}\n", m.tc_offset, m.guest_eip, m.kind);
        }
        out += "\n";
        todo.extend(next.into_iter().rev());
    }
    out
}

#[test]
fn golden_translations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("BT86_BLESS").is_some();
    let mut failures = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 6, "golden cases are missing from {}", dir.display());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let (input, expected) = text.split_once("----\n").expect("a ---- line separates input and output");
        let mut eip = None;
        let mut code = Vec::new();
        for line in input.lines() {
            if let Some(v) = line.strip_prefix("eip:") {
                eip = Some(u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).unwrap());
            } else if let Some(v) = line.strip_prefix("code:") {
                code.extend(parse_hex(v));
            }
        }
        let actual = render(eip.expect("an eip: line"), &code);
        if bless {
            std::fs::write(&path, format!("{input}----\n{actual}")).unwrap();
        } else if actual != expected {
            failures.push(format!("{}:\n--- expected\n{expected}\n--- actual\n{actual}", path.display()));
        }
    }
    assert!(failures.is_empty(), "golden translations differ (rerun with BT86_BLESS=1 to accept):\n{}", failures.join("\n"));
}

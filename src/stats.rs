//! The `--stats` table: the counters of brief §4.8, from the translator and
//! the monitor, in one plain-text table a student can read after a run.

use std::fmt::Write;

use bt86_cpu::ExecStats;
use bt86_native::RunStats;
use bt86_translate::TranslationStats;

/// Renders the counters as aligned "name  value" rows under headings.
pub fn format(tc: &TranslationStats, run: &RunStats, cpu: &ExecStats) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let section = |title: &str, rows: &mut Vec<(String, String)>| rows.push((format!("[{title}]"), String::new()));
    let row = |rows: &mut Vec<(String, String)>, name: &str, value: u64| rows.push((format!("  {name}"), value.to_string()));

    section("translation", &mut rows);
    row(&mut rows, "units translated", tc.units);
    row(&mut rows, "guest instructions translated", tc.guest_instructions);
    row(&mut rows, "guest bytes translated", tc.guest_bytes);
    row(&mut rows, "TC bytes emitted", tc.tc_bytes);
    row(&mut rows, "IDENT instructions", tc.ident);
    let rewritten: u64 = tc.rewritten.values().sum();
    row(&mut rows, "rewritten instructions", rewritten);
    for (class, n) in &tc.rewritten {
        row(&mut rows, &format!("  {class}"), *n);
    }
    row(&mut rows, "chain patches", tc.chain_patches);
    row(&mut rows, "indirect-branch trampolines", tc.trampolines);
    row(&mut rows, "invalidated units", tc.invalidated_units);
    row(&mut rows, "invalidated pages", tc.invalidated_pages);
    row(&mut rows, "TC flushes", tc.flushes);

    section("execution", &mut rows);
    row(&mut rows, "world switches into the TC", run.entries);
    let exits: u64 = run.exits.values().sum();
    row(&mut rows, "exits", exits);
    for (reason, n) in &run.exits {
        row(&mut rows, &format!("  {reason}"), *n);
    }
    let callouts: u64 = run.callouts.values().sum();
    row(&mut rows, "callouts", callouts);
    for (class, n) in &run.callouts {
        row(&mut rows, &format!("  {class}"), *n);
    }
    row(&mut rows, "indirect lookups: hits", run.ib_hits);
    row(&mut rows, "indirect lookups: misses", run.ib_misses);
    let exceptions: u64 = run.exceptions.values().sum();
    row(&mut rows, "guest exceptions delivered", exceptions);
    for (name, n) in &run.exceptions {
        row(&mut rows, &format!("  {name}"), *n);
    }
    row(&mut rows, "software interrupts (int n)", run.software_interrupts);
    row(&mut rows, "hardware interrupts delivered", run.interrupts);
    row(&mut rows, "privilege-level changes", cpu.privilege_changes);
    // The classic example of an instruction trap-and-emulate cannot catch:
    // at CPL > 0, popf changes neither IF nor IOPL and raises nothing.
    row(&mut rows, "popf at CPL > 0", cpu.popf_above_cpl0);
    row(&mut rows, "  IF change silently ignored", cpu.popf_if_ignored);
    row(&mut rows, "  IOPL change silently ignored", cpu.popf_iopl_ignored);
    row(&mut rows, "hlt sleeps until a device event", run.halt_sleeps);
    row(&mut rows, "emulated accesses after a host fault", run.emulated_accesses);
    row(&mut rows, "self-modifying-code faults", run.smc_faults);
    row(&mut rows, "hidden faults (shadow page fills)", run.shadow.hidden_faults);
    row(&mut rows, "  pages mapped", run.shadow.pages_mapped);
    row(&mut rows, "  mmap calls", run.shadow.map_calls);
    row(&mut rows, "  first writes that set D", run.shadow.dirty_upgrades);
    row(&mut rows, "address-space switches (CR3, PG)", run.shadow.flushes);
    row(&mut rows, "  mappings kept across them", run.shadow.kept_on_switch);
    row(&mut rows, "pages dropped by invlpg", run.shadow.invlpg_drops);
    row(&mut rows, "supervisor mappings dropped", run.shadow.supervisor_drops);
    row(&mut rows, "code pages write-protected", run.protected_pages);
    row(&mut rows, "shadow segment updates (modify_ldt)", run.ldt_writes);

    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in rows {
        if value.is_empty() {
            let _ = writeln!(out, "{name}");
        } else {
            let _ = writeln!(out, "{name:<width$}  {value:>12}");
        }
    }
    out
}

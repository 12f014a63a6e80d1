//! gdb's `monitor` commands: the debugger's views of the machine that gdb
//! itself knows nothing about (descriptor tables, page tables, the
//! translation of the current unit, the monitor's counters).
//!
//! This module owns only the command names and their parsing; the text
//! comes from [`crate::inspect`], so `monitor info gdt` in gdb prints
//! exactly what `info gdt` prints in `bt86 debug`. It must not format
//! machine state itself.

use bt86_native::Vm;

use crate::inspect;

/// One `monitor` command: its words, its arguments, and what it shows.
struct Command {
    name: &'static str,
    args: &'static str,
    help: &'static str,
}

/// Every command, in the order `monitor help` lists them.
const COMMANDS: &[Command] = &[
    Command { name: "info gdt", args: "", help: "the guest's GDT, one descriptor a line" },
    Command { name: "info idt", args: "", help: "the guest's IDT, one gate a line" },
    Command { name: "info tss", args: "", help: "the current TSS: ring stacks and I/O bitmap" },
    Command { name: "info tab", args: "", help: "the guest's page tables: every present mapping, in runs" },
    Command { name: "info eflags", args: "", help: "EFLAGS, decoded, with the virtual IF and IOPL" },
    Command { name: "page", args: " LADDR", help: "the page walk of one linear address" },
    Command { name: "sreg", args: "", help: "segment registers with their hidden descriptor parts" },
    Command { name: "creg", args: "", help: "CR0, CR2, CR3, CR4, GDTR, IDTR, TR, LDTR and the CPL" },
    Command {
        name: "translation",
        args: " [LADDR]",
        help: "the unit at EIP (or LADDR): each guest instruction, its tag and the TC code",
    },
    Command { name: "stats", args: "", help: "the translator's and the monitor's counters" },
    Command { name: "help", args: "", help: "this list" },
];

/// Runs one `monitor` command and returns what gdb prints. A bad command
/// or argument is a one-line message; the session goes on either way.
pub fn execute(vm: &mut Vm, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["info", "gdt"] => inspect::info_gdt(vm),
        ["info", "idt"] => inspect::info_idt(vm),
        ["info", "tss"] => inspect::info_tss(vm),
        ["info", "tab"] => inspect::info_tab(vm),
        ["info", "eflags"] => inspect::info_eflags(vm),
        ["sreg"] => inspect::sreg(vm),
        ["creg"] => inspect::creg(vm),
        ["translation"] => inspect::translation(vm),
        ["translation", addr] => match parse_u32(addr) {
            Some(laddr) => inspect::translation_at(vm, laddr),
            None => format!("translation {addr}: not a linear address; give a number such as 0x100000 (gdb does not evaluate symbols in monitor commands)\n"),
        },
        ["stats"] => inspect::stats(vm),
        ["page", addr] => match parse_u32(addr) {
            Some(laddr) => inspect::page(vm, laddr),
            None => format!("page {addr}: not a linear address; give a number such as 0x100000 (gdb does not evaluate symbols in monitor commands)\n"),
        },
        [] | ["help"] => help(),
        _ => format!("unknown monitor command {:?}; `monitor help` lists them\n", line.trim()),
    }
}

/// The list `monitor help` prints.
fn help() -> String {
    let width = COMMANDS.iter().map(|c| c.name.len() + c.args.len()).max().unwrap_or(0);
    let mut text = String::from("bt86 monitor commands (gdb: monitor COMMAND):\n");
    for c in COMMANDS {
        let usage = format!("{}{}", c.name, c.args);
        text.push_str(&format!("  {usage:<width$}  {}\n", c.help));
    }
    text
}

/// A number as a debugger user types it: hexadecimal with 0x, decimal
/// otherwise.
fn parse_u32(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_as_typed() {
        let cases = [
            ("0x100000", Some(0x10_0000)),
            ("0XFFFFFFFF", Some(0xFFFF_FFFF)),
            ("4096", Some(4096)),
            ("0x", None),
            ("0x100000000", None),
            ("-1", None),
            ("ten", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_u32(text), expected, "{text}");
        }
    }

    /// `monitor help` lists every command the dispatcher knows, one a line.
    #[test]
    fn help_lists_every_command() {
        let text = help();
        for c in COMMANDS {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{}{} ", c.name, c.args)))
                .unwrap_or_else(|| panic!("no line for {}:\n{text}", c.name));
            assert!(line.ends_with(c.help), "{line}");
        }
        assert_eq!(text.lines().count(), COMMANDS.len() + 1);
    }
}

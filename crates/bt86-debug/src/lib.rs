//! The teaching debugger: step through guest code and its translation.
//!
//! This crate owns what a student types and reads while debugging a guest:
//! the command session with Bochs-like command names ([`session`]), the
//! plain-text views of registers, descriptor tables, page tables and
//! translations shared by every front end ([`inspect`]), and the scripted
//! mode that reads commands from a file or standard input ([`batch`]), and
//! the terminal UI that shows all of it on one screen ([`tui`]).
//!
//! It drives the guest only through the monitor's run-control API
//! (`bt86_native::runctl`: step, resume, breakpoints, watchpoints, memory
//! access without side effects). It must not reach into the translation
//! cache, the address space or the run loop directly, and it holds no
//! guest semantics: descriptor and page-table formats come from bt86-cpu.
#![forbid(unsafe_code)]

pub mod batch;
pub mod gdb;
pub mod inspect;
pub mod session;
pub mod tui;

pub use batch::{run_batch, BatchOutcome};
pub use session::{CommandError, Session, Symbols};

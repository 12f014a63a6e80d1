//! The translator: decode guest code, cut it into translation units,
//! classify every instruction, emit the translation, and manage the
//! translation cache.
//!
//! This crate produces bytes and metadata; it never executes anything. The
//! native layer (bt86-native) owns the executable memory and hands the
//! cache a [`MonitorMemory`] to write through. Everything here can be
//! tested, and is, by comparing translations with golden files.
#![forbid(unsafe_code)]

pub mod cache;
pub mod classify;
pub mod emit;
pub mod layout;
pub mod trace;
pub mod unit;

pub use cache::{BufferMemory, ExitId, FastMap, Frames, ExitRecord, MonitorMemory, PlacedUnit, TranslationCache, TranslationStats, UnitId};
pub use classify::{classify, Branch, CalloutReason, Class, Inline, Mode};
pub use layout::TcAddr;
pub use unit::{translate_unit, translate_unit_into, CodeSource, ExitKind, MapEntry, MapKind, TranslatedInsn, Unit, UnitEnd};

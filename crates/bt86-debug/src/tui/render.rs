//! Drawing: a [`ViewModel`] onto a ratatui frame.
//!
//! This module owns the screen's layout and look: where each panel goes,
//! how an instruction, a register or an event is laid out in it, and the
//! colours of the IDENT, REWRITE and CALLOUT tags. [`render`] is a pure
//! function of the view model and the frame's size: it reads no VM and no
//! clock, so the same model always gives the same screen (the snapshot
//! tests rely on it).
//!
//! The layout, for a terminal of 120 columns and 40 lines or more:
//!
//! ```text
//! title bar: kernel, status, keys
//! +- guest code ------------------+- registers -------------------+
//! +- translation unit ------------+- virtual CPU -----------------+
//! |                               +- events ----------------------+
//! +- memory ----------------------+                               |
//! +- output ----------------------+- COM1 --------+- counters ----+
//! (bt86) command line
//! ```

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::model::{CodeLine, MemorySource, SegmentView, UnitRow, ViewModel, EFLAGS_NAMES};

/// The panels of the screen, for finding the one under the mouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panel {
    Title,
    Code,
    Unit,
    Memory,
    Registers,
    Vcpu,
    Events,
    Output,
    Serial,
    Stats,
    Command,
}

/// Where each panel is on a screen of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    pub title: Rect,
    pub code: Rect,
    pub unit: Rect,
    pub memory: Rect,
    pub registers: Rect,
    pub vcpu: Rect,
    pub events: Rect,
    pub output: Rect,
    pub serial: Rect,
    pub stats: Rect,
    pub command: Rect,
}

impl Areas {
    fn all(&self) -> [(Panel, Rect); 11] {
        [
            (Panel::Title, self.title),
            (Panel::Code, self.code),
            (Panel::Unit, self.unit),
            (Panel::Memory, self.memory),
            (Panel::Registers, self.registers),
            (Panel::Vcpu, self.vcpu),
            (Panel::Events, self.events),
            (Panel::Output, self.output),
            (Panel::Serial, self.serial),
            (Panel::Stats, self.stats),
            (Panel::Command, self.command),
        ]
    }
}

/// The layout of a screen of size `area`.
pub fn areas(area: Rect) -> Areas {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(1), Constraint::Min(12), Constraint::Length(8), Constraint::Length(1)])
        .split(area);
    // The right column is as wide as a line of four registers needs.
    let body = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Min(40), Constraint::Length(RIGHT_WIDTH)])
        .split(rows[1]);
    let left = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(40), Constraint::Min(5), Constraint::Length(7)])
        .split(body[0]);
    let right = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(12), Constraint::Length(8), Constraint::Min(3)])
        .split(body[1]);
    let bottom = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Min(40), Constraint::Length(RIGHT_WIDTH - 30), Constraint::Length(30)])
        .split(rows[2]);
    Areas {
        title: rows[0],
        code: left[0],
        unit: left[1],
        memory: left[2],
        registers: right[0],
        vcpu: right[1],
        events: right[2],
        output: bottom[0],
        serial: bottom[1],
        stats: bottom[2],
        command: rows[3],
    }
}

/// The panel at a cell of a screen of size `screen`.
pub fn panel_at(screen: Rect, column: u16, row: u16) -> Option<Panel> {
    let position = ratatui::layout::Position { x: column, y: row };
    areas(screen).all().into_iter().find(|(_, r)| r.contains(position)).map(|(p, _)| p)
}

/// The width of the right-hand column: registers, virtual CPU, events.
const RIGHT_WIDTH: u16 = 54;

const DIM: Style = Style::new().fg(Color::DarkGray);
const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);

/// The colour of a translator tag.
fn tag_style(tag: &str) -> Style {
    match tag {
        "IDENT" => Style::new().fg(Color::Green),
        "REWRITE" => Style::new().fg(Color::Yellow),
        "CALLOUT" => Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
        "FAULT" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        _ => Style::new(),
    }
}

fn block(title: String) -> Block<'static> {
    Block::default().borders(Borders::ALL).border_style(DIM).title(Span::styled(title, BOLD))
}

/// The lines of `lines` a panel of `area` shows, starting at `first`.
fn window<T>(lines: &[T], first: usize, area: Rect) -> &[T] {
    let height = area.height.saturating_sub(2) as usize;
    let first = first.min(lines.len());
    &lines[first..(first + height).min(lines.len())]
}

/// The first line to show so that the newest lines are at the bottom,
/// `back` lines back in time.
fn from_bottom(len: usize, back: usize, area: Rect) -> usize {
    let height = area.height.saturating_sub(2) as usize;
    len.saturating_sub(height).saturating_sub(back)
}

/// Draws one screen.
pub fn render(frame: &mut Frame, view: &ViewModel) {
    let a = areas(frame.area());
    title_bar(frame, a.title, view);
    code_panel(frame, a.code, view);
    unit_panel(frame, a.unit, view);
    memory_panel(frame, a.memory, view);
    registers_panel(frame, a.registers, view);
    vcpu_panel(frame, a.vcpu, view);
    events_panel(frame, a.events, view);
    output_panel(frame, a.output, view);
    serial_panel(frame, a.serial, view);
    stats_panel(frame, a.stats, view);
    command_line(frame, a.command, view);
    if let Some(help) = &view.help {
        help_screen(frame, help, view.scroll.help);
    }
}

fn title_bar(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let status_style = if view.running { Style::new().fg(Color::Black).bg(Color::Yellow) } else { Style::new().fg(Color::Black).bg(Color::Cyan) };
    let line = Line::from(vec![
        Span::styled(format!(" bt86 debug: {} ", view.title), Style::new().fg(Color::Black).bg(Color::White).add_modifier(Modifier::BOLD)),
        Span::styled(format!(" {} ", view.status), status_style),
        Span::styled(" F1 help F7 step F8 unit F5 continue F10 quit", DIM),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn code_line(l: &CodeLine, text_width: usize) -> Line<'static> {
    let marker = match (l.is_eip, l.breakpoint) {
        (true, true) => Span::styled("●>", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
        (true, false) => Span::styled("=>", Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)),
        (false, true) => Span::styled("● ", Style::new().fg(Color::Red)),
        (false, false) => Span::raw("  "),
    };
    let text_style = if l.is_eip { Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED) } else { Style::new() };
    let mut bytes = l.bytes.clone();
    if bytes.len() > 10 {
        bytes.truncate(9);
        bytes.push('+');
    }
    Line::from(vec![
        marker,
        Span::styled(format!("{:08x} ", l.addr), DIM),
        Span::styled(format!("{bytes:<10} "), DIM),
        Span::styled(format!("{:<text_width$}", l.text), text_style),
        Span::raw(" "),
        Span::styled(format!("{:<7}", l.tag), tag_style(l.tag)),
        Span::raw(" "),
        Span::styled(l.reason.clone(), DIM),
    ])
}

fn code_panel(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let code = &view.code;
    // Lines with labels take two rows; build the rows first.
    // The text column is as wide as the longest instruction shown needs,
    // leaving the rest of the line to the reasons.
    let text_width = code.lines.iter().map(|l| l.text.len()).max().unwrap_or(0).clamp(12, 24);
    let mut rows: Vec<Line> = Vec::new();
    let mut eip_row = 0;
    for (i, l) in code.lines.iter().enumerate() {
        if let Some(label) = &l.label {
            rows.push(Line::styled(format!("<{label}>:"), Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD)));
        }
        if i == code.eip_index {
            eip_row = rows.len();
        }
        rows.push(code_line(l, text_width));
        // The reason for the instruction at EIP in full, on its own line:
        // the one a student is about to execute.
        if i == code.eip_index && !l.reason.is_empty() {
            rows.push(Line::from(vec![Span::raw("   why: "), Span::styled(l.reason.clone(), tag_style(l.tag))]));
        }
    }
    // EIP sits a few rows from the top, so the instructions before it show.
    let lead = (area.height.saturating_sub(2) / 4) as i64;
    let first = (eip_row as i64 - lead + i64::from(view.scroll.code)).max(0) as usize;
    let title = match code.lines.get(code.eip_index) {
        Some(l) => format!(" guest code at EIP {:08x} ", l.addr),
        None => " guest code ".to_string(),
    };
    frame.render_widget(Paragraph::new(window(&rows, first, area).to_vec()).block(block(title)), area);
}

fn unit_row(row: &UnitRow) -> Line<'static> {
    match row {
        UnitRow::Guest { eip, text, tag, reason, current } => Line::from(vec![
            Span::styled(if *current { "=>" } else { "  " }, Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)),
            Span::raw(format!("{eip:08x}  ")),
            Span::styled(format!("{text:<24}"), BOLD),
            Span::raw(" "),
            Span::styled(format!("{tag:<7}"), tag_style(tag)),
            Span::raw(" "),
            Span::styled(reason.clone(), DIM),
        ]),
        UnitRow::Tc { addr, text } => Line::from(vec![Span::styled(format!("      tc {addr:08x}  "), DIM), Span::raw(text.clone())]),
        UnitRow::Exit { stub, what, chained_to } => {
            let state = match chained_to {
                Some(to) => Span::styled(format!("[chained to {to:08x}]"), Style::new().fg(Color::Green)),
                None => Span::styled("[unchained]", Style::new().fg(Color::Yellow)),
            };
            Line::from(vec![Span::styled(format!("  exit {stub:08x}  "), DIM), state, Span::raw(format!(" {what}"))])
        }
    }
}

fn unit_panel(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let mut rows = vec![Line::styled(view.unit.header.clone(), DIM)];
    rows.extend(view.unit.rows.iter().map(unit_row));
    let title = format!(" translation unit at EIP: {} ", view.unit.title);
    frame.render_widget(Paragraph::new(window(&rows, view.scroll.unit, area).to_vec()).block(block(title)), area);
}

fn memory_panel(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let m = &view.memory;
    let title = match m.source {
        MemorySource::Stack => " memory: linear, at ESP (x/xp ADDR: elsewhere, F2: physical) ".to_string(),
        MemorySource::Linear(a) => format!(" memory: linear {a:08x} (F2: physical) "),
        MemorySource::Physical(a) => format!(" memory: physical {a:08x} (F2: linear) "),
    };
    let rows: Vec<Line> = m
        .rows
        .iter()
        .map(|(addr, row)| match row {
            Ok(bytes) => {
                // Bytes in memory order, four to a group.
                let hex: Vec<String> = bytes.chunks(4).map(|w| w.iter().map(|b| format!("{b:02x}")).collect()).collect();
                let ascii: String = bytes.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' }).collect();
                Line::from(vec![Span::styled(format!("{addr:08x}  "), DIM), Span::raw(hex.join(" ")), Span::styled(format!("  {ascii}"), DIM)])
            }
            Err(e) => Line::from(vec![Span::styled(format!("{addr:08x}  "), DIM), Span::styled(e.clone(), Style::new().fg(Color::Red))]),
        })
        .collect();
    frame.render_widget(Paragraph::new(window(&rows, 0, area).to_vec()).block(block(title)), area);
}

fn segment_line(s: &SegmentView, name_width: usize) -> Line<'static> {
    if s.kind == "null" {
        return Line::from(vec![Span::styled(format!("{:<name_width$}", s.name), BOLD), Span::raw(format!(" {:04x} ", s.selector)), Span::styled("null", DIM)]);
    }
    Line::from(vec![
        Span::styled(format!("{:<name_width$}", s.name), BOLD),
        Span::raw(format!(" {:04x} base {:08x} limit {:08x} ", s.selector, s.base, s.limit)),
        Span::styled(s.kind.clone(), DIM),
    ])
}

fn registers_panel(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let r = &view.registers;
    let names = bt86_cpu::state::gpr::NAMES;
    let gpr_line = |range: std::ops::Range<usize>| {
        let mut spans = Vec::new();
        for i in range {
            spans.push(Span::styled(format!("{} ", names[i]), BOLD));
            spans.push(Span::raw(format!("{:08x} ", r.gpr[i])));
        }
        Line::from(spans)
    };
    let mut flag_spans = Vec::new();
    for (mask, name) in EFLAGS_NAMES {
        if r.eflags & mask != 0 {
            flag_spans.push(Span::styled(name.to_uppercase(), Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)));
        } else {
            flag_spans.push(Span::styled(name.to_string(), DIM));
        }
        flag_spans.push(Span::raw(" "));
    }
    flag_spans.push(Span::raw(format!("IOPL={}", (r.eflags >> 12) & 3)));
    let mut rows = vec![
        gpr_line(0..4),
        gpr_line(4..8),
        Line::from(vec![
            Span::styled("eip ", BOLD),
            Span::styled(format!("{:08x}", r.eip), Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)),
            Span::styled("  eflags ", BOLD),
            Span::raw(format!("{:08x}", r.eflags)),
        ]),
        Line::from(flag_spans),
    ];
    rows.extend(r.segments.iter().map(|s| segment_line(s, 2)));
    frame.render_widget(Paragraph::new(rows).block(block(" registers (segments: hidden parts) ".to_string())), area);
}

fn vcpu_panel(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let v = &view.vcpu;
    let table = |name: &str, (base, limit): (u32, u16)| vec![Span::styled(format!("{name} "), BOLD), Span::raw(format!("{base:08x} limit {limit:04x}   "))];
    let mut tables = table("gdtr", v.gdtr);
    tables.extend(table("idtr", v.idtr));
    let rows = vec![
        Line::from(vec![
            Span::styled("CPL ", BOLD),
            Span::styled(v.cpl.to_string(), Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)),
            Span::styled("  virtual IF ", BOLD),
            Span::raw(u8::from(v.virtual_if).to_string()),
            Span::styled("  IOPL ", BOLD),
            Span::raw(v.iopl.to_string()),
            Span::styled(if v.halted { "  halted" } else { "" }, Style::new().fg(Color::Yellow)),
        ]),
        Line::from(vec![
            Span::styled("cr0 ", BOLD),
            Span::raw(format!("{:08x} {:<18}", v.cr0, v.cr0_bits)),
            Span::styled("cr2 ", BOLD),
            Span::raw(format!("{:08x}", v.cr2)),
        ]),
        Line::from(vec![
            Span::styled("cr3 ", BOLD),
            Span::raw(format!("{:08x} {:<18}", v.cr3, "")),
            Span::styled("cr4 ", BOLD),
            Span::raw(format!("{:08x} {}", v.cr4, v.cr4_bits)),
        ]),
        Line::from(tables),
        segment_line(&v.tr, 4),
        segment_line(&v.ldtr, 4),
    ];
    frame.render_widget(Paragraph::new(rows).block(block(" virtual CPU ".to_string())), area);
}

fn events_panel(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let e = &view.events;
    let counts: Vec<String> = e.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let mut rows = vec![Line::styled(
        if counts.is_empty() { "no events yet".to_string() } else { format!("kept {}: {}", e.lines.len(), counts.join(", ")) },
        Style::new().fg(Color::Cyan),
    )];
    let height = area.height.saturating_sub(3) as usize;
    let first = e.lines.len().saturating_sub(height).saturating_sub(view.scroll.events);
    for (kind, eip, detail) in e.lines.iter().skip(first).take(height) {
        let style = match *kind {
            "exception" | "fault" => Style::new().fg(Color::Red),
            "interrupt" => Style::new().fg(Color::Yellow),
            "callout" => Style::new().fg(Color::Magenta),
            _ => Style::new(),
        };
        rows.push(Line::from(vec![Span::styled(format!("{kind:<9}"), style), Span::styled(format!(" {eip:08x} "), DIM), Span::raw(detail.clone())]));
    }
    let title = format!(" events: {} since start ", e.total);
    frame.render_widget(Paragraph::new(rows).block(block(title)), area);
}

fn output_panel(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let rows: Vec<Line> = view
        .output
        .iter()
        .map(|l| if l.starts_with("error:") { Line::styled(l.clone(), Style::new().fg(Color::Red)) } else { Line::raw(l.clone()) })
        .collect();
    let scroll = view.scroll.output.min(u16::MAX as usize) as u16;
    frame.render_widget(Paragraph::new(rows).wrap(Wrap { trim: false }).scroll((scroll, 0)).block(block(" output ".to_string())), area);
}

fn serial_panel(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let first = from_bottom(view.serial.len(), view.scroll.serial, area);
    let rows: Vec<Line> = window(&view.serial, first, area).iter().map(|l| Line::raw(l.clone())).collect();
    frame.render_widget(Paragraph::new(rows).block(block(" COM1 ".to_string())), area);
}

fn stats_panel(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let width = area.width.saturating_sub(2) as usize;
    let rows: Vec<Line> = view
        .stats
        .iter()
        .map(|(name, value)| {
            let room = width.saturating_sub(value.len() + 1);
            let name: String = if name.chars().count() > room { name.chars().take(room.saturating_sub(1)).chain(['~']).collect() } else { name.clone() };
            Line::from(vec![Span::raw(format!("{name:<room$} ")), Span::styled(value.clone(), BOLD)])
        })
        .collect();
    frame.render_widget(Paragraph::new(window(&rows, view.scroll.stats, area).to_vec()).block(block(" counters ".to_string())), area);
}

fn command_line(frame: &mut Frame, area: Rect, view: &ViewModel) {
    let prompt = crate::batch::PROMPT;
    let line = Line::from(vec![Span::styled(prompt, Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)), Span::raw(view.command.clone())]);
    frame.render_widget(Paragraph::new(line), area);
    if view.help.is_none() && !view.running {
        let x = area.x + (prompt.len() + view.cursor) as u16;
        frame.set_cursor_position((x.min(area.right().saturating_sub(1)), area.y));
    }
}

fn help_screen(frame: &mut Frame, lines: &[String], scroll: usize) {
    let area = frame.area();
    let popup = Rect {
        x: area.x + 2,
        y: area.y + 1,
        width: area.width.saturating_sub(4),
        height: area.height.saturating_sub(2),
    };
    frame.render_widget(Clear, popup);
    let rows: Vec<Line> = lines.iter().map(|l| Line::raw(l.clone())).collect();
    let shown = window(&rows, scroll, popup).to_vec();
    frame.render_widget(Paragraph::new(shown).block(block(" help ".to_string())), popup);
}

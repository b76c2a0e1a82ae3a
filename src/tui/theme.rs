//! Themes: TOML files with one table per semantic role (`[status_failed] fg = "red"`),
//! embedded with `include_str!` and overridable by `<config dir>/themes/<name>.toml`.
//! `NO_COLOR` strips every colour and keeps the modifiers, so meaning survives as bold /
//! reverse / underline.

use crate::engine::view::{CopyOutcome, GrantStatus, JobPhase, RecipientState, RetractionState};
use crate::model::{Disposition, FailureReason};
use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Embedded themes: (name, TOML).
pub const BUILTIN_THEMES: [(&str, &str); 3] = [
    ("default", include_str!("../../themes/default.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
    ("midnight", include_str!("../../themes/midnight.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    #[error("theme {name:?}: no such theme; built in: default, high-contrast, midnight (or put {name}.toml in {dir})", dir = .dir.display())]
    Unknown { name: String, dir: PathBuf },
    #[error("{path}: cannot read theme: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {message}")]
    Parse {
        origin: String,
        line: usize,
        message: String,
    },
    #[error(
        "{origin}: [{role}] {field} = {value:?}: not a colour (use a name like \"red\", \"dark_gray\", \"reset\" or \"#rrggbb\")"
    )]
    Colour {
        origin: String,
        role: String,
        field: &'static str,
        value: String,
    },
    #[error(
        "{origin}: [{role}] unknown modifier {value:?} (bold, dim, italic, underlined, reversed, crossed_out)"
    )]
    Modifier {
        origin: String,
        role: String,
        value: String,
    },
}

/// One role's style in a theme file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StyleSpec {
    #[serde(default)]
    pub fg: Option<String>,
    #[serde(default)]
    pub bg: Option<String>,
    #[serde(default)]
    pub modifiers: Vec<String>,
}

fn parse_colour(
    origin: &str,
    role: &str,
    field: &'static str,
    value: &str,
) -> Result<Color, ThemeError> {
    value.parse::<Color>().map_err(|_| ThemeError::Colour {
        origin: origin.to_string(),
        role: role.to_string(),
        field,
        value: value.to_string(),
    })
}

impl StyleSpec {
    fn to_style(&self, origin: &str, role: &str) -> Result<Style, ThemeError> {
        let mut style = Style::default();
        if let Some(fg) = &self.fg {
            style = style.fg(parse_colour(origin, role, "fg", fg)?);
        }
        if let Some(bg) = &self.bg {
            style = style.bg(parse_colour(origin, role, "bg", bg)?);
        }
        for m in &self.modifiers {
            let modifier = match m.to_ascii_lowercase().replace('-', "_").as_str() {
                "bold" => Modifier::BOLD,
                "dim" => Modifier::DIM,
                "italic" => Modifier::ITALIC,
                "underlined" | "underline" => Modifier::UNDERLINED,
                "reversed" | "reverse" => Modifier::REVERSED,
                "crossed_out" => Modifier::CROSSED_OUT,
                _ => {
                    return Err(ThemeError::Modifier {
                        origin: origin.to_string(),
                        role: role.to_string(),
                        value: m.clone(),
                    });
                }
            };
            style = style.add_modifier(modifier);
        }
        Ok(style)
    }
}

macro_rules! roles {
    ($($(#[$doc:meta])* $role:ident),+ $(,)?) => {
        /// Resolved styles per semantic role.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Theme {
            pub name: String,
            $($(#[$doc])* pub $role: Style,)+
        }

        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ThemeFile {
            #[serde(default)]
            name: Option<String>,
            $(#[serde(default)] $role: Option<StyleSpec>,)+
        }

        impl Theme {
            /// Every role name, for documentation and checks.
            pub const ROLES: &'static [&'static str] = &[$(stringify!($role)),+];

            fn blank(name: String) -> Theme {
                Theme { name, $($role: Style::default(),)+ }
            }

            fn apply(&mut self, file: &ThemeFile, origin: &str) -> Result<(), ThemeError> {
                $(if let Some(spec) = &file.$role {
                    self.$role = spec.to_style(origin, stringify!($role))?;
                })+
                Ok(())
            }

            /// The same theme with `f` applied to every role's style.
            fn map_styles(&self, f: impl Fn(Style) -> Style) -> Theme {
                Theme { name: self.name.clone(), $($role: f(self.$role),)+ }
            }

            /// Every (role, style) pair.
            pub fn styles(&self) -> Vec<(&'static str, Style)> {
                vec![$((stringify!($role), self.$role)),+]
            }
        }
    };
}

roles!(
    /// Body text.
    text,
    /// Secondary text (timestamps, placeholders, empty states).
    muted,
    /// Pane titles.
    title,
    /// Table headers.
    header,
    border,
    border_focused,
    /// The selected row / cell.
    selection,
    tab_active,
    tab_inactive,
    hint_key,
    hint_text,
    /// Text inputs (query, prompt, confirmation).
    input,
    /// The column a query error points at.
    input_error,
    /// Error messages.
    error,
    status_pending,
    status_running,
    status_failed,
    status_succeeded,
    status_warning,
    /// A policy matrix cell that is not chosen.
    matrix_cell,
    /// The chosen action of a disposition.
    matrix_cell_active,
    gauge,
    sparkline,
    /// Help overlay and dialogs.
    overlay,
);

fn parse_theme_file(text: &str, origin: &str) -> Result<ThemeFile, ThemeError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(0);
        ThemeError::Parse {
            origin: origin.to_string(),
            line,
            message: e.message().to_string(),
        }
    })
}

impl Theme {
    /// The built-in default theme (16 ANSI colours only).
    pub fn default_theme() -> Theme {
        // The embedded file is checked by tests; if it ever failed to parse we still draw.
        Theme::from_toml(BUILTIN_THEMES[0].1, "themes/default.toml")
            .unwrap_or_else(|_| Theme::blank("default".into()))
    }

    /// Parses a theme file over the default theme: roles it omits keep the default style.
    pub fn from_toml(text: &str, origin: &str) -> Result<Theme, ThemeError> {
        let file = parse_theme_file(text, origin)?;
        let mut theme = if origin == "themes/default.toml" {
            Theme::blank("default".into())
        } else {
            Theme::default_theme()
        };
        theme.name = file.name.clone().unwrap_or_else(|| origin.to_string());
        theme.apply(&file, origin)?;
        Ok(theme)
    }

    /// Finds a theme by name or path: a path (contains `/` or ends in `.toml`) is read as is;
    /// a name is looked up in `<config_dir>/themes/<name>.toml` first, then built in.
    pub fn load(name: &str, config_dir: Option<&Path>) -> Result<Theme, ThemeError> {
        let read = |path: &Path| -> Result<Theme, ThemeError> {
            let text = std::fs::read_to_string(path).map_err(|source| ThemeError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            Theme::from_toml(&text, &path.display().to_string())
        };
        if name.contains('/') || name.ends_with(".toml") {
            return read(Path::new(name));
        }
        if let Some(dir) = config_dir {
            let path = dir.join("themes").join(format!("{name}.toml"));
            if path.is_file() {
                return read(&path);
            }
        }
        match BUILTIN_THEMES.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Theme::from_toml(text, &format!("themes/{n}.toml")),
            None => Err(ThemeError::Unknown {
                name: name.to_string(),
                dir: config_dir
                    .map(|d| d.join("themes"))
                    .unwrap_or_else(|| PathBuf::from("<config dir>/themes")),
            }),
        }
    }
}

impl Theme {
    /// The same theme without colours (for `NO_COLOR`): modifiers only. Where a theme shows a
    /// state by colour alone (a selection by its background), a modifier takes its place, so
    /// every state stays distinguishable: the selection and the active tab are reversed, a
    /// chosen matrix cell is bold and underlined (not reversed: the cursor on it is).
    pub fn without_colours(&self) -> Theme {
        let mut theme = self.map_styles(|s| Style {
            fg: None,
            bg: None,
            underline_color: None,
            ..s
        });
        theme.selection = theme.selection.add_modifier(Modifier::REVERSED);
        theme.tab_active = theme.tab_active.add_modifier(Modifier::REVERSED);
        theme.matrix_cell_active = theme
            .matrix_cell_active
            .remove_modifier(Modifier::REVERSED)
            .add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
        theme
    }

    /// The most colours any role uses.
    pub fn colour_depth(&self) -> ColourDepth {
        self.styles()
            .into_iter()
            .flat_map(|(_, s)| [s.fg, s.bg, s.underline_color])
            .flatten()
            .map(ColourDepth::of)
            .max()
            .unwrap_or(ColourDepth::Ansi16)
    }

    /// The theme as a terminal showing `depth` colours can draw it: colours beyond `depth` are
    /// replaced by the nearest it has, and the warning says so (`None`: nothing changed).
    pub fn for_terminal(&self, depth: ColourDepth) -> (Theme, Option<String>) {
        let needs = self.colour_depth();
        if needs <= depth {
            return (self.clone(), None);
        }
        let fit = |c: Option<Color>| c.map(|c| approximate(c, depth));
        let theme = self.map_styles(|s| Style {
            fg: fit(s.fg),
            bg: fit(s.bg),
            underline_color: fit(s.underline_color),
            ..s
        });
        // The status line shows its start on a narrow screen: what happened comes first.
        let warning = format!(
            "theme {} approximated to {}: it needs {}, COLORTERM/TERM advertise less (set COLORTERM=truecolor if the terminal has it)",
            self.name,
            depth.label(),
            needs.label()
        );
        (theme, Some(warning))
    }
}

/// How many colours a terminal shows (or a theme uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ColourDepth {
    /// The 16 ANSI colours.
    Ansi16,
    Ansi256,
    /// 24-bit RGB.
    TrueColour,
}

impl ColourDepth {
    pub fn label(self) -> &'static str {
        match self {
            ColourDepth::Ansi16 => "16 colours",
            ColourDepth::Ansi256 => "256 colours",
            ColourDepth::TrueColour => "24-bit colour",
        }
    }

    /// What `COLORTERM` and `TERM` advertise: `COLORTERM=truecolor|24bit` or a `TERM` ending
    /// in `-direct` is 24-bit; a `TERM` with `256color` is 256; anything else 16.
    pub fn advertised(colorterm: Option<&str>, term: Option<&str>) -> ColourDepth {
        let colorterm = colorterm.unwrap_or("").to_ascii_lowercase();
        let term = term.unwrap_or("").to_ascii_lowercase();
        if colorterm == "truecolor" || colorterm == "24bit" || term.ends_with("-direct") {
            ColourDepth::TrueColour
        } else if term.contains("256color") {
            ColourDepth::Ansi256
        } else {
            ColourDepth::Ansi16
        }
    }

    /// What this process's environment advertises.
    pub fn from_env() -> ColourDepth {
        let var = |name: &str| std::env::var(name).ok();
        ColourDepth::advertised(var("COLORTERM").as_deref(), var("TERM").as_deref())
    }

    fn of(colour: Color) -> ColourDepth {
        match colour {
            Color::Rgb(..) => ColourDepth::TrueColour,
            Color::Indexed(n) if n >= 16 => ColourDepth::Ansi256,
            _ => ColourDepth::Ansi16,
        }
    }
}

/// The 16 ANSI colours in index order, with xterm's default RGB values.
const ANSI16: [(Color, (u8, u8, u8)); 16] = [
    (Color::Black, (0, 0, 0)),
    (Color::Red, (205, 0, 0)),
    (Color::Green, (0, 205, 0)),
    (Color::Yellow, (205, 205, 0)),
    (Color::Blue, (0, 0, 238)),
    (Color::Magenta, (205, 0, 205)),
    (Color::Cyan, (0, 205, 205)),
    (Color::Gray, (229, 229, 229)),
    (Color::DarkGray, (127, 127, 127)),
    (Color::LightRed, (255, 0, 0)),
    (Color::LightGreen, (0, 255, 0)),
    (Color::LightYellow, (255, 255, 0)),
    (Color::LightBlue, (92, 92, 255)),
    (Color::LightMagenta, (255, 0, 255)),
    (Color::LightCyan, (0, 255, 255)),
    (Color::White, (255, 255, 255)),
];

/// The RGB value of a 256-colour index (xterm's palette).
fn indexed_rgb(n: u8) -> (u8, u8, u8) {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    match n {
        0..=15 => ANSI16[usize::from(n)].1,
        16..=231 => {
            let i = n - 16;
            (
                LEVELS[usize::from(i / 36)],
                LEVELS[usize::from(i / 6 % 6)],
                LEVELS[usize::from(i % 6)],
            )
        }
        _ => {
            let v = 8 + 10 * (n - 232);
            (v, v, v)
        }
    }
}

fn distance(a: (u8, u8, u8), b: (u8, u8, u8)) -> u32 {
    let d = |x: u8, y: u8| (i32::from(x) - i32::from(y)).unsigned_abs();
    d(a.0, b.0).pow(2) + d(a.1, b.1).pow(2) + d(a.2, b.2).pow(2)
}

/// The nearest colour a `depth` terminal has.
fn approximate(colour: Color, depth: ColourDepth) -> Color {
    if ColourDepth::of(colour) <= depth {
        return colour;
    }
    let rgb = match colour {
        Color::Rgb(r, g, b) => (r, g, b),
        Color::Indexed(n) => indexed_rgb(n),
        other => return other,
    };
    match depth {
        ColourDepth::TrueColour => colour,
        // Indexes 16..255 (the cube and the greys) are the same in every 256-colour terminal;
        // 0..15 follow the user's palette, so they are not picked for an exact RGB.
        ColourDepth::Ansi256 => (16..=255u8)
            .min_by_key(|n| distance(indexed_rgb(*n), rgb))
            .map(Color::Indexed)
            .unwrap_or(colour),
        ColourDepth::Ansi16 => ANSI16
            .iter()
            .min_by_key(|(_, value)| distance(*value, rgb))
            .map(|(named, _)| *named)
            .unwrap_or(colour),
    }
}

/// True when the `NO_COLOR` convention asks for no colours (set and non-empty).
pub fn no_color_requested() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Style lookups: the colour of each state the panes show.
impl Theme {
    pub fn disposition(&self, disposition: Option<Disposition>) -> Style {
        match disposition {
            Some(Disposition::Malicious) => self.status_failed,
            Some(Disposition::Suspicious | Disposition::Spoof) => self.status_warning,
            Some(_) => self.text,
            None => self.muted,
        }
    }

    pub fn retraction(&self, state: RetractionState) -> Style {
        match state {
            RetractionState::None => self.muted,
            RetractionState::InProgress => self.status_running,
            RetractionState::Partial => self.status_warning,
            RetractionState::Retracted => self.status_succeeded,
            RetractionState::Restored => self.status_pending,
        }
    }

    pub fn grant(&self, status: &GrantStatus) -> Style {
        match status {
            GrantStatus::Granted => self.status_succeeded,
            GrantStatus::Missing { .. } => self.status_failed,
            GrantStatus::NotInTenant => self.status_warning,
        }
    }

    /// The State column's colour: located green, unresolved a warning, the rest by reason.
    pub fn recipient_state(&self, state: &RecipientState) -> Style {
        match state {
            RecipientState::Located => self.status_succeeded,
            RecipientState::Unresolved { .. } => self.status_warning,
            RecipientState::NotActionable { reason, .. } => match reason {
                FailureReason::NotAuthorized | FailureReason::ProviderError => self.status_failed,
                FailureReason::InAnotherJob => self.status_running,
                FailureReason::External => self.status_warning,
                _ => self.muted,
            },
        }
    }

    pub fn outcome(&self, outcome: &CopyOutcome) -> Style {
        match outcome {
            CopyOutcome::Pending => self.status_pending,
            CopyOutcome::InFlight => self.status_running,
            CopyOutcome::Succeeded { .. } | CopyOutcome::Restored => self.status_succeeded,
            CopyOutcome::Failed { .. } => self.status_failed,
            CopyOutcome::Skipped { .. } => self.muted,
        }
    }

    pub fn job_phase(&self, state: JobPhase, failed: u64) -> Style {
        match state {
            JobPhase::Running => self.status_running,
            JobPhase::Finished if failed > 0 => self.status_warning,
            JobPhase::Finished => self.status_succeeded,
            JobPhase::Cancelled => self.muted,
            JobPhase::Interrupted => self.status_failed,
        }
    }
}

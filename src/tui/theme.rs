//! Themes: TOML files with one table per semantic role (`[status_failed] fg = "red"`),
//! embedded with `include_str!` and overridable by `<config dir>/themes/<name>.toml`.
//! `NO_COLOR` strips every colour and keeps the modifiers, so meaning survives as bold /
//! reverse / underline.

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

            /// The same theme without colours (for `NO_COLOR`): modifiers only.
            pub fn without_colours(&self) -> Theme {
                let strip = |s: Style| Style { fg: None, bg: None, ..s };
                Theme { name: self.name.clone(), $($role: strip(self.$role),)+ }
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

/// True when the `NO_COLOR` convention asks for no colours (set and non-empty).
pub fn no_color_requested() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

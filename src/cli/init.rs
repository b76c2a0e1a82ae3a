//! `clawback init [--out FILE] [--force]`: writes a fully commented config template.

use crate::cli::exit;
use crate::cli::out::{errln, outln};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write (default: the platform config dir's config.toml).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// The template. Every key is explained; placeholders are `<…>` in strings.
pub const TEMPLATE: &str = include_str!("init_template.toml");

pub fn run(args: InitArgs) -> u8 {
    let path = match args.out.or_else(|| {
        directories::ProjectDirs::from("", "", "clawback")
            .map(|d| d.config_dir().join("config.toml"))
    }) {
        Some(p) => p,
        None => {
            errln!("clawback: no config directory on this platform; pass --out FILE");
            return exit::USAGE;
        }
    };
    if path.exists() && !args.force {
        errln!(
            "clawback: {} already exists; pass --force to overwrite it",
            path.display()
        );
        return exit::USAGE;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        errln!("clawback: {}: cannot create directory: {e}", dir.display());
        return exit::FAILURE;
    }
    if let Err(e) = crate::secret::write_private_file(&path, TEMPLATE.as_bytes()) {
        errln!("clawback: {}: cannot write: {e}", path.display());
        return exit::FAILURE;
    }
    outln!(
        "Wrote {}. Fill in the <placeholders>, then run `clawback --config {} doctor`.",
        path.display(),
        path.display()
    );
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_once_placeholders_are_filled() {
        let filled = TEMPLATE
            .replace("<directory-tenant-id>", "contoso.onmicrosoft.com")
            .replace(
                "<application-client-id>",
                "11111111-2222-3333-4444-555555555555",
            )
            .replace("<admin@example.com>", "admin@fabrikam.com");
        let config = crate::config::Config::parse(
            &filled,
            std::path::Path::new("/etc/clawback/config.toml"),
        )
        .expect("template parses");
        assert_eq!(config.tenants.len(), 2);
        assert!(TEMPLATE.lines().filter(|l| l.starts_with('#')).count() > 20);
        // What the README's "Connecting real tenants" says, the template does: certificates
        // first, the Gmail quota of current projects, Google domains present.
        let (ms, google) = (&config.tenants[0], &config.tenants[1]);
        assert_eq!(ms.auth, crate::config::MicrosoftAuth::Certificate);
        assert!(ms.cloud.is_global());
        assert!(!google.domains.is_empty());
        assert_eq!(google.limits.gmail_units_per_second, 100);
        assert_eq!(google.limits.gmail_project_units_per_minute, 1_200_000);
        assert_eq!(google.limits.gmail_project_units_per_day, 80_000_000);
        for must in [
            "RBAC for Applications",
            "NOT Mail.ReadWrite",
            "Privileged Role Administrator",
            "Admin SDK API",
            "super administrator",
            "Allow public client flows",
        ] {
            assert!(TEMPLATE.contains(must), "template lacks {must:?}");
        }
    }
}

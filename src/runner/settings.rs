//! Process-wide settings: `$CAIRN_HOME/config.toml` and `CAIRN__SECTION__KEY`
//! environment variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::backend::{Error, Result};

/// Settings that apply to every flow and task of a process unless a flow or task says
/// otherwise.
///
/// They come from two places, the environment winning over the file:
///
/// | setting | `$CAIRN_HOME/config.toml` | environment |
/// |---|---|---|
/// | checkpoint every task | `[flows] checkpointing = true` | `CAIRN__FLOWS__CHECKPOINTING=true` |
/// | refresh every cache | `[tasks] refresh_cache = true` | `CAIRN__TASKS__REFRESH_CACHE=true` |
/// | the store used when no task or flow names one | `[results] store = "s3://bucket/prefix"` | `CAIRN__RESULTS__STORE=...` |
/// | a local disk tier in front of that store | `[results] cache_dir = "/var/cache/cairn"` | `CAIRN__RESULTS__CACHE_DIR=...` |
///
/// `CAIRN_HOME` defaults to `~/.cairn`. When no store is named anywhere, persisted
/// results go to `$CAIRN_HOME/storage` on the local disk.
///
/// For checkpointing, the more specific setting wins: a task's own `checkpoint`, then
/// its flow's `checkpointing`, then the environment, then the file, then off.
///
/// ```
/// use cairn::Settings;
/// let home = tempfile::tempdir().unwrap();
/// std::fs::write(home.path().join("config.toml"), "[flows]\ncheckpointing = true\n").unwrap();
///
/// let settings = Settings::from_sources(home.path(), [("CAIRN__FLOWS__CHECKPOINTING", "false")])?;
/// assert_eq!(settings.checkpointing, Some(false)); // the environment wins over the file
///
/// let settings = Settings::from_sources(home.path(), Vec::<(String, String)>::new())?;
/// assert_eq!(settings.checkpointing, Some(true));
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// `CAIRN_HOME`.
    pub home: PathBuf,
    /// `[flows] checkpointing`; `None` when neither source sets it.
    pub checkpointing: Option<bool>,
    /// `[tasks] refresh_cache`; `None` when neither source sets it.
    pub refresh_cache: Option<bool>,
    /// `[results] store`: the URL of the store used when none is named.
    pub store: Option<String>,
    /// `[results] cache_dir`: a local disk tier in front of that store (the URL
    /// option `?cache_dir=`, see `backend::TieredBackend`).
    pub cache_dir: Option<String>,
}

static GLOBAL: OnceLock<Settings> = OnceLock::new();

impl Settings {
    /// The settings of this process, read once from the real environment and
    /// `$CAIRN_HOME/config.toml`. A file that cannot be read or parsed is reported
    /// through `tracing` and ignored, so one bad file does not stop every flow; use
    /// [`Settings::load`] to see the error.
    pub fn global() -> &'static Settings {
        GLOBAL.get_or_init(|| {
            Settings::load().unwrap_or_else(|e| {
                tracing::error!("ignoring cairn settings: {e}");
                Settings {
                    home: default_home(std::env::var_os("CAIRN_HOME").map(PathBuf::from)),
                    ..Settings::default()
                }
            })
        })
    }

    /// Reads the settings from the real environment and `$CAIRN_HOME/config.toml`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file or variable when a value is not valid.
    pub fn load() -> Result<Settings> {
        let home = default_home(std::env::var_os("CAIRN_HOME").map(PathBuf::from));
        Settings::from_sources(&home, std::env::vars())
    }

    /// Reads the settings from `home/config.toml` (absent is fine) and the given
    /// environment variables (only `CAIRN__*` ones are looked at).
    ///
    /// # Errors
    /// [`Error::Config`] naming the file or variable when a value is not valid.
    pub fn from_sources<K: AsRef<str>, V: AsRef<str>>(
        home: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Settings> {
        let mut settings = Settings {
            home: home.to_path_buf(),
            ..Settings::default()
        };
        let path = home.join("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => settings.apply_file(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Config {
                    message: format!("cannot read {}: {e}", path.display()),
                })
            }
        }
        let env: BTreeMap<String, String> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .filter(|(k, _)| k.starts_with("CAIRN__"))
            .collect();
        for (name, value) in &env {
            settings.apply_env(name, value)?;
        }
        Ok(settings)
    }

    /// The URL of the store persisted results go to when no task or flow names one.
    pub fn default_store_url(&self) -> String {
        let url = match &self.store {
            Some(url) => url.clone(),
            None => format!("file://{}", self.home.join("storage").display()),
        };
        match &self.cache_dir {
            Some(dir) if !url.contains('?') => format!("{url}?cache_dir={dir}"),
            _ => url,
        }
    }

    fn apply_file(&mut self, path: &Path, text: &str) -> Result<()> {
        let bad = |what: String| Error::Config {
            message: format!("{}: {what}", path.display()),
        };
        let table: toml::Table = text.parse().map_err(|e| bad(format!("{e}")))?;
        for (section, values) in &table {
            let Some(values) = values.as_table() else {
                return Err(bad(format!("'{section}' must be a [section]")));
            };
            for (key, value) in values {
                let name = format!("{section}.{key}");
                match name.as_str() {
                    "flows.checkpointing" | "tasks.refresh_cache" => {
                        let flag = value
                            .as_bool()
                            .ok_or_else(|| bad(format!("{name} must be true or false")))?;
                        self.set_flag(&name, flag);
                    }
                    "results.store" => {
                        let url = value
                            .as_str()
                            .ok_or_else(|| bad(format!("{name} must be a URL string")))?;
                        self.store = Some(url.to_owned());
                    }
                    "results.cache_dir" => {
                        let dir = value
                            .as_str()
                            .ok_or_else(|| bad(format!("{name} must be a directory path")))?;
                        self.cache_dir = Some(dir.to_owned());
                    }
                    _ => tracing::warn!("{}: unknown setting {name}", path.display()),
                }
            }
        }
        Ok(())
    }

    fn apply_env(&mut self, variable: &str, value: &str) -> Result<()> {
        let name = variable["CAIRN__".len()..]
            .to_ascii_lowercase()
            .replacen("__", ".", 1);
        match name.as_str() {
            "flows.checkpointing" | "tasks.refresh_cache" => {
                let flag = parse_flag(value).ok_or_else(|| Error::Config {
                    message: format!("{variable}={value}: expected true or false"),
                })?;
                self.set_flag(&name, flag);
            }
            "results.store" => self.store = Some(value.to_owned()),
            "results.cache_dir" => self.cache_dir = Some(value.to_owned()),
            _ => tracing::warn!("unknown setting {variable}"),
        }
        Ok(())
    }

    fn set_flag(&mut self, name: &str, flag: bool) {
        match name {
            "flows.checkpointing" => self.checkpointing = Some(flag),
            _ => self.refresh_cache = Some(flag),
        }
    }
}

fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn default_home(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cairn")))
        .unwrap_or_else(|| PathBuf::from(".cairn"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with(config: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(config) = config {
            std::fs::write(dir.path().join("config.toml"), config).unwrap();
        }
        dir
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_set_means_nothing_set() {
        let home = home_with(None);
        let s = Settings::from_sources(home.path(), env(&[("PATH", "/bin")])).unwrap();
        assert_eq!(s.checkpointing, None);
        assert_eq!(s.refresh_cache, None);
        assert_eq!(
            s.default_store_url(),
            format!("file://{}/storage", home.path().display())
        );
    }

    #[test]
    fn the_file_sets_flags_and_store() {
        let home = home_with(Some(
            "[flows]\ncheckpointing = true\n[tasks]\nrefresh_cache = true\n[results]\nstore = \"s3://b/p\"\n",
        ));
        let s = Settings::from_sources(home.path(), env(&[])).unwrap();
        assert_eq!(s.checkpointing, Some(true));
        assert_eq!(s.refresh_cache, Some(true));
        assert_eq!(s.default_store_url(), "s3://b/p");
        let s = Settings::from_sources(
            home.path(),
            [("CAIRN__RESULTS__CACHE_DIR", "/var/cache/cairn")],
        )
        .unwrap();
        assert_eq!(s.cache_dir.as_deref(), Some("/var/cache/cairn"));
        assert_eq!(s.default_store_url(), "s3://b/p?cache_dir=/var/cache/cairn");
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let home = home_with(Some("[flows]\ncheckpointing = true\n"));
        let s = Settings::from_sources(
            home.path(),
            env(&[
                ("CAIRN__FLOWS__CHECKPOINTING", "false"),
                ("CAIRN__TASKS__REFRESH_CACHE", "TRUE"),
                ("CAIRN__RESULTS__STORE", "gs://bucket"),
            ]),
        )
        .unwrap();
        assert_eq!(s.checkpointing, Some(false));
        assert_eq!(s.refresh_cache, Some(true));
        assert_eq!(s.store.as_deref(), Some("gs://bucket"));
    }

    #[test]
    fn bad_values_name_their_source() {
        let home = home_with(Some("[flows]\ncheckpointing = \"yes please\"\n"));
        let err = Settings::from_sources(home.path(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("config.toml"), "{err}");
        assert!(err.to_string().contains("flows.checkpointing"), "{err}");

        let home = home_with(Some("[flows\n"));
        let err = Settings::from_sources(home.path(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("config.toml"), "{err}");

        let home = home_with(None);
        let err = Settings::from_sources(
            home.path(),
            env(&[("CAIRN__FLOWS__CHECKPOINTING", "maybe")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("CAIRN__FLOWS__CHECKPOINTING=maybe"),
            "{err}"
        );
    }
}

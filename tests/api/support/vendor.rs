//! The vendors' own SDKs against our stand-ins: the Python scripts in `tests/vendor/` run
//! Microsoft's and Google's PyPI packages against a stand-in, so that a misreading of an API
//! reference shared by a stand-in and the provider tested against it shows up as the vendor's
//! client refusing an answer.

use std::process::{Command, Stdio};

/// The Python modules of `modules` that `python3` cannot import, as a reason to skip; `None`
/// when all import.
pub fn missing_python_modules(modules: &[&str]) -> Option<String> {
    let imports = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let output = Command::new("python3").args(["-c", &imports]).output();
    match output {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "python3 cannot import {}: {}",
            modules.join(", "),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )),
        Err(error) => Some(format!("python3 cannot run: {error}")),
    }
}

/// What a vendor script said.
pub struct VendorRun {
    pub success: bool,
    /// Its standard output then its standard error.
    pub said: String,
    stdout: String,
}

impl VendorRun {
    /// The value of the script's result line `{name} {value}`.
    pub fn result(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no `{name}` line:\n{}", self.said))
    }
}

/// Runs `tests/vendor/{script}` with `args` and `env` (and nothing of this process's Python
/// or cloud settings), off the async threads so the stand-in it calls keeps serving.
pub async fn run_vendor_script(script: &str, args: &[&str], env: &[(&str, String)]) -> VendorRun {
    let path = format!("{}/tests/vendor/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new("python3");
    command
        .arg(path)
        .args(args)
        .env_remove("PYTHONPATH")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("AZURE_AUTHORITY_HOST");
    // The stand-ins listen on this host; a proxy of the environment would not reach them.
    for proxy in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        command
            .env_remove(proxy)
            .env_remove(proxy.to_ascii_lowercase());
    }
    command
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    VendorRun {
        success: output.status.success(),
        said: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
        stdout,
    }
}

//! Finding and loading the ONNX Runtime shared library (`ort` with `load-dynamic`), once per
//! process, and choosing the execution device.
//!
//! The library is looked for, in order, at `$ORT_DYLIB_PATH`, next to the executable, in the
//! checkout the binary was built from (`.ort/lib`, where `scripts/setup.sh` puts it), and in
//! `./.ort/lib`. The first that exists is loaded.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Where an encoder runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider on the given GPU ordinal.
    Cuda(i32),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<i32>) {
                Some(Ok(n)) if n >= 0 => Ok(Device::Cuda(n)),
                _ => Err(format!("unknown device {s:?}: use cpu, cuda or cuda:N")),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

const LIB_NAME: &str = "libonnxruntime.so";

/// The places the library is looked for, in order.
pub fn candidate_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join(LIB_NAME));
        }
    }
    out.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".ort/lib")
            .join(LIB_NAME),
    );
    out.push(PathBuf::from(".ort/lib").join(LIB_NAME));
    out
}

static LOADED: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// Loads ONNX Runtime once and returns the library's path and the process's environment;
/// later calls return the same outcome.
pub fn init() -> Result<(PathBuf, ort::environment::Environment)> {
    LOADED
        .get_or_init(|| {
            let tried = candidate_paths();
            let explicit = std::env::var_os("ORT_DYLIB_PATH").is_some();
            let found = if explicit {
                // An explicit path is used as given, even when it does not exist: say so.
                Some(tried[0].clone())
            } else {
                tried.iter().find(|p| p.exists()).cloned()
            };
            let Some(path) = found else {
                return Err(format!(
                    "libonnxruntime.so not found (looked at {}); run `scripts/setup.sh` to install it \
                     from the onnxruntime wheel, or set ORT_DYLIB_PATH to its path",
                    tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                ));
            };
            if !path.exists() {
                return Err(format!("ORT_DYLIB_PATH={} does not exist", path.display()));
            }
            let builder = ort::init_from(&path)
                .map_err(|e| format!("could not load {}: {e}", path.display()))?;
            let env = builder
                .with_name("blindspot")
                .build()
                .map_err(|e| format!("could not start onnx runtime from {}: {e}", path.display()))?;
            Ok((path, env))
        })
        .clone()
        .map_err(Error::Runtime)
}

/// The execution provider list for a session on `device`; CUDA that cannot be had is an
/// error that says why, never a silent fall-back to the CPU.
pub fn execution_providers(
    device: Device,
    lib: &std::path::Path,
) -> Result<Vec<ort::ep::ExecutionProviderDispatch>> {
    use ort::ep::ExecutionProvider;
    match device {
        Device::Cpu => Ok(vec![ort::ep::CPU::default().build()]),
        Device::Cuda(n) => {
            let cuda = ort::ep::CUDA::default().with_device_id(n);
            match ort::ep::CUDA::is_available() {
                Ok(true) => Ok(vec![cuda.build().error_on_failure()]),
                Ok(false) => Err(Error::Runtime(format!(
                    "device cuda:{n} asked for, but the ONNX Runtime library at {} has no CUDA execution \
                     provider; install the onnxruntime-gpu wheel (with CUDA 12 and cuDNN 9) and set \
                     ORT_DYLIB_PATH to its libonnxruntime.so, or use --device cpu",
                    lib.display()
                ))),
                Err(e) => Err(Error::Runtime(format!("device cuda:{n}: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert!("gpu"
            .parse::<Device>()
            .unwrap_err()
            .contains("cpu, cuda or cuda:N"));
        assert!("cuda:-1".parse::<Device>().is_err());
    }
}

//! Kernel sources and their run-time compilation with NVRTC, cached on disk.
//!
//! Every `kernels/*.cu` file is embedded with `include_str!` and compiled as one NVRTC program for the
//! device's own architecture (`sm_XY`), straight to a CUBIN, so loading it needs no PTX JIT. The shared
//! header `kernels/common.cuh` is pasted in place of its `#include` line (with `#line` markers, so
//! NVRTC's messages name the right file and line). The kernels include no CUDA header (bf16/f16 are
//! converted with bit operations and PTX); a source that does include a system header gets
//! `$CUDA_HOME/include` (default `/usr/local/cuda/include`) on its include path, and a missing header
//! is reported as [`CudaError::MissingHeader`] naming `CUDA_HOME`.
//!
//! Cache: `$BRAID_CACHE_DIR/kernels`, else `$XDG_CACHE_HOME/braid/kernels`, else
//! `~/.cache/braid/kernels`; one file per kernel source, named by the source file, the architecture
//! and the sha256 of (source, options, NVRTC version). A cache that cannot be read or written only
//! costs a recompile (a `tracing` warning says why).

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::CudaError;

/// One kernel source file of `kernels/`.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// File name inside `kernels/`, e.g. `gemv.cu`.
    pub file: &'static str,
    /// The file's text.
    pub text: &'static str,
}

/// The shared header pasted into every kernel source.
pub const COMMON_HEADER: &str = include_str!("../../../kernels/common.cuh");

/// The kernel parameter structs and shared constants (`kernels/params.cuh`), included by
/// `common.cuh`; mirrored by [`crate::params`].
pub const PARAMS_HEADER: &str = include_str!("../../../kernels/params.cuh");

/// The headers `#include "..."` may name, pasted in place (NVRTC sees one self-contained text).
const HEADERS: &[(&str, &str)] = &[("common.cuh", COMMON_HEADER), ("params.cuh", PARAMS_HEADER)];

/// Every kernel source of the backend, one per op family.
pub const KERNEL_SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "gemv.cu",
        text: include_str!("../../../kernels/gemv.cu"),
    },
    KernelSource {
        file: "attention.cu",
        text: include_str!("../../../kernels/attention.cu"),
    },
    KernelSource {
        file: "norm.cu",
        text: include_str!("../../../kernels/norm.cu"),
    },
    KernelSource {
        file: "elementwise.cu",
        text: include_str!("../../../kernels/elementwise.cu"),
    },
    KernelSource {
        file: "embedding.cu",
        text: include_str!("../../../kernels/embedding.cu"),
    },
    KernelSource {
        file: "argmax.cu",
        text: include_str!("../../../kernels/argmax.cu"),
    },
    KernelSource {
        file: "bench.cu",
        text: include_str!("../../../kernels/bench.cu"),
    },
    KernelSource {
        file: "persistent.cu",
        text: include_str!("../../../kernels/persistent.cu"),
    },
    KernelSource {
        file: "prefill.cu",
        text: include_str!("../../../kernels/prefill.cu"),
    },
    KernelSource {
        file: "attention_prefill.cu",
        text: include_str!("../../../kernels/attention_prefill.cu"),
    },
];

/// The kernel source called `file` (e.g. `gemv.cu`).
pub fn kernel_source(file: &str) -> Option<&'static KernelSource> {
    KERNEL_SOURCES.iter().find(|s| s.file == file)
}

/// The text NVRTC compiles for `src`: every `#include "common.cuh"` / `#include "params.cuh"` line
/// replaced by the header's text (recursively, each header once), with `#line` markers so NVRTC's
/// messages name the right file and line.
pub fn expanded_source(src: &KernelSource) -> String {
    expand_text(src.file, src.text)
}

/// [`expanded_source`] for any text (`file` names it in `#line` markers).
pub fn expand_text(file: &str, text: &str) -> String {
    let mut out =
        String::with_capacity(text.len() + COMMON_HEADER.len() + PARAMS_HEADER.len() + 256);
    let mut pasted = Vec::new();
    paste(file, text, &mut out, &mut pasted);
    out
}

fn paste(file: &str, text: &str, out: &mut String, pasted: &mut Vec<&'static str>) {
    for (i, line) in text.lines().enumerate() {
        let header = HEADERS
            .iter()
            .find(|(name, _)| line.trim() == format!("#include \"{name}\""));
        match header {
            Some((name, body)) => {
                if !pasted.contains(name) {
                    pasted.push(name);
                    out.push_str(&format!("#line 1 \"{name}\"\n"));
                    paste(name, body, out, pasted);
                }
                out.push_str(&format!("#line {} \"{file}\"\n", i + 2));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

/// Whether libnvrtc can be loaded; `Err` says why not (the library names searched).
pub fn nvrtc_available() -> Result<(), String> {
    // SAFETY: only tries to dlopen the library; no NVRTC function is called.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(format!(
            "libnvrtc could not be loaded (searched {:?}); put the CUDA toolkit's lib64 (or the \
             nvidia-cuda-nvrtc wheel's nvidia/cu13/lib) on LD_LIBRARY_PATH",
            cudarc::get_lib_name_candidates("nvrtc")
        ))
    }
}

/// The NVRTC version `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    nvrtc_available().map_err(CudaError::NvrtcUnavailable)?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is loadable (checked above); both pointers are valid for writes.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::NvrtcUnavailable(format!("nvrtcVersion failed: {e}")))?;
    Ok((major, minor))
}

pub use crate::env::{cache_dir, cuda_include_dir};

/// Compiles kernel sources with NVRTC for one architecture, through the disk cache.
#[derive(Debug)]
pub struct Compiler {
    arch: String,
    options: Vec<String>,
    version: (i32, i32),
    cache: Option<PathBuf>,
    last_log: std::sync::Mutex<String>,
}

impl Compiler {
    /// A compiler for `arch` (e.g. `sm_90`), using the disk cache when `use_cache`.
    ///
    /// Errors: [`CudaError::NvrtcUnavailable`] when libnvrtc cannot be loaded.
    pub fn new(arch: &str, use_cache: bool) -> Result<Self, CudaError> {
        let version = nvrtc_version()?;
        let options = vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_string(),
            "-lineinfo".to_string(),
        ];
        Ok(Compiler {
            arch: arch.to_string(),
            options,
            version,
            cache: if use_cache { cache_dir() } else { None },
            last_log: std::sync::Mutex::new(String::new()),
        })
    }

    /// The architecture compiled for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The NVRTC version `(major, minor)`.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// The CUBIN of `src` compiled with the preprocessor `defines` (`("ATT_D", "128")` becomes
    /// `-DATT_D=128`; an empty value gives `-DNAME`), from the cache or freshly compiled (and then
    /// cached).
    ///
    /// Errors: [`CudaError::Compile`] with NVRTC's log and the file name,
    /// [`CudaError::MissingHeader`] when an `#include` cannot be found.
    pub fn cubin(
        &self,
        src: &KernelSource,
        defines: &[(&str, &str)],
    ) -> Result<Vec<u8>, CudaError> {
        let text = expanded_source(src);
        let mut options = self.options_for(&text);
        options.extend(defines.iter().map(|(k, v)| {
            if v.is_empty() {
                format!("-D{k}")
            } else {
                format!("-D{k}={v}")
            }
        }));
        let key = self.key(&text, &options);
        let path = self.cache.as_ref().map(|dir| {
            let stem = src.file.trim_end_matches(".cu");
            dir.join(format!("{stem}-{}-{}.cubin", self.arch, &key[..24]))
        });
        if let Some(p) = &path {
            if let Ok(bytes) = std::fs::read(p) {
                if !bytes.is_empty() {
                    return Ok(bytes);
                }
            }
        }
        let started = std::time::Instant::now();
        let cubin = self.compile_text(src.file, &text, &options)?;
        tracing::debug!(
            file = src.file,
            arch = %self.arch,
            ms = started.elapsed().as_millis() as u64,
            "compiled kernel source with NVRTC"
        );
        if let Some(p) = &path {
            if let Err(e) = write_atomically(p, &cubin) {
                tracing::warn!(path = %p.display(), error = %e, "could not write the kernel cache");
            }
        }
        Ok(cubin)
    }

    /// The options for `text`: the CUDA include directory is added only when the source includes a
    /// system header (braid's kernels include none), so cached kernels do not depend on `CUDA_HOME`.
    fn options_for(&self, text: &str) -> Vec<String> {
        let mut options = self.options.clone();
        if text
            .lines()
            .any(|l| l.trim_start().starts_with("#include <"))
        {
            let include = cuda_include_dir();
            if include.is_dir() {
                options.push(format!("--include-path={}", include.display()));
            }
        }
        options
    }

    fn key(&self, text: &str, options: &[String]) -> String {
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        for o in options {
            h.update([0u8]);
            h.update(o.as_bytes());
        }
        h.update(format!("nvrtc {}.{}", self.version.0, self.version.1).as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compiles `text` with `options` and returns NVRTC's log too (ptxas's resource report when the
    /// options ask for it with `--ptxas-options=-v`). No cache.
    pub fn compile_with_log(
        &self,
        src: &KernelSource,
        extra: &[&str],
    ) -> Result<(Vec<u8>, String), CudaError> {
        let text = expanded_source(src);
        let mut options = self.options_for(&text);
        options.extend(extra.iter().map(|s| s.to_string()));
        let cubin = self.compile_text(src.file, &text, &options)?;
        Ok((
            cubin,
            self.last_log.lock().map(|l| l.clone()).unwrap_or_default(),
        ))
    }

    /// Compiles `text` (named `file` in messages; `#include "params.cuh"` / `"common.cuh"` pasted)
    /// and discards the result: for checks such as [`crate::params::c_layout_assertions`].
    ///
    /// Errors: [`CudaError::Compile`] with NVRTC's log.
    pub fn check_text(&self, file: &str, text: &str) -> Result<(), CudaError> {
        let text = expand_text(file, text);
        let options = self.options_for(&text);
        self.compile_text(file, &text, &options).map(|_| ())
    }

    fn compile_text(
        &self,
        file: &str,
        text: &str,
        options: &[String],
    ) -> Result<Vec<u8>, CudaError> {
        use cudarc::nvrtc::{result, sys};
        let fail = |code: String, log: String| CudaError::Compile {
            file: file.to_string(),
            arch: self.arch.clone(),
            code,
            log,
        };
        let c_text = CString::new(text)
            .map_err(|_| fail("source".into(), "source holds a NUL byte".into()))?;
        let c_name = CString::new(file)
            .map_err(|_| fail("name".into(), "file name holds a NUL byte".into()))?;
        let prog = result::create_program(&c_text, Some(&c_name))
            .map_err(|e| fail(format!("{e}"), "nvrtcCreateProgram failed".into()))?;
        let guard = ProgramGuard(prog);
        // SAFETY: `prog` was created above and is destroyed only by `guard`.
        let compiled = unsafe { result::compile_program(guard.0, options) };
        if let Err(e) = compiled {
            // SAFETY: as above.
            let log = unsafe { result::get_program_log(guard.0) }
                .map(|raw| c_chars_to_string(&raw))
                .unwrap_or_else(|e| format!("(no log: {e})"));
            if let Some(header) = missing_header(&log) {
                return Err(CudaError::MissingHeader {
                    file: file.to_string(),
                    header,
                    include_dir: cuda_include_dir().display().to_string(),
                });
            }
            return Err(fail(format!("{e}"), log));
        }
        // SAFETY: as above.
        if let Ok(raw) = unsafe { result::get_program_log(guard.0) } {
            if let Ok(mut l) = self.last_log.lock() {
                *l = c_chars_to_string(&raw);
            }
        }
        let mut size = 0usize;
        // SAFETY: the program compiled; `size` is valid for writes.
        unsafe { sys::nvrtcGetCUBINSize(guard.0, &mut size) }
            .result()
            .map_err(|e| fail(format!("{e}"), "nvrtcGetCUBINSize failed".into()))?;
        let mut cubin = vec![0u8; size];
        // SAFETY: `cubin` holds exactly the `size` bytes NVRTC reported.
        unsafe { sys::nvrtcGetCUBIN(guard.0, cubin.as_mut_ptr() as *mut c_char) }
            .result()
            .map_err(|e| fail(format!("{e}"), "nvrtcGetCUBIN failed".into()))?;
        Ok(cubin)
    }
}

/// Destroys an NVRTC program on every exit path.
struct ProgramGuard(cudarc::nvrtc::sys::nvrtcProgram);

impl Drop for ProgramGuard {
    fn drop(&mut self) {
        // SAFETY: the program is live and destroyed exactly once, here.
        let _ = unsafe { cudarc::nvrtc::result::destroy_program(self.0) };
    }
}

fn c_chars_to_string(raw: &[c_char]) -> String {
    let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).collect();
    match CStr::from_bytes_until_nul(&bytes) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The header named in an NVRTC "cannot open source file" message, if any.
fn missing_header(log: &str) -> Option<String> {
    let at = log.find("cannot open source file \"")? + "cannot open source file \"".len();
    let rest = &log[at..];
    rest.find('"').map(|end| rest[..end].to_string())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanded_source_pastes_the_header_once_with_line_markers() {
        for src in KERNEL_SOURCES {
            let text = expanded_source(src);
            assert!(
                !text.lines().any(|l| l.trim().starts_with("#include \"")),
                "{}",
                src.file
            );
            for h in ["common.cuh", "params.cuh"] {
                assert_eq!(
                    text.matches(&format!("#line 1 \"{h}\"")).count(),
                    1,
                    "{} {h}",
                    src.file
                );
            }
            assert!(text.contains(&format!("\"{}\"", src.file)), "{}", src.file);
        }
    }

    #[test]
    fn missing_header_is_found_in_an_nvrtc_log() {
        let log = "gemv.cu(3): catastrophic error: cannot open source file \"cuda_bf16.h\"\n";
        assert_eq!(missing_header(log).as_deref(), Some("cuda_bf16.h"));
        assert_eq!(missing_header("error: expected a ;"), None);
    }

    #[test]
    fn every_source_is_listed_once() {
        let mut files: Vec<_> = KERNEL_SOURCES.iter().map(|s| s.file).collect();
        files.sort();
        files.dedup();
        assert_eq!(files.len(), KERNEL_SOURCES.len());
        assert!(kernel_source("gemv.cu").is_some());
        assert!(kernel_source("nope.cu").is_none());
    }
}

//! Model weights: memory-mapped safetensors files (single or sharded), or seeded random bf16
//! weights held in memory. Both are one type, [`Checkpoint`], which implements
//! [`braid_ir::WeightSource`], so the engine treats them the same.
//!
//! A checkpoint directory holds `model.safetensors`, or `model.safetensors.index.json` whose
//! `weight_map` sends each tensor name to a shard file next to it (the Hugging Face layout).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use braid_ir::{DType, TensorView, WeightSource};
use half::bf16;
use memmap2::Mmap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype as StDtype, SafeTensors};
use serde_json::Value;

use super::config::{Qwen3Config, TensorRole};
use super::error::LoadError;

/// File name of a single-file checkpoint inside a model directory.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of a sharded checkpoint's index inside a model directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Standard deviation of random matmul/embedding weights (transformers' `initializer_range`).
pub const RANDOM_STD: f32 = 0.02;
/// Standard deviation of the noise around 1.0 in random rms_norm gains.
pub const RANDOM_NORM_NOISE: f32 = 0.1;
/// Standard deviation of random projection biases (around 0), as `scripts/make_checkpoint.py`'s
/// `--bias-std`: large enough that a bias left out shows in the logits.
pub const RANDOM_BIAS_STD: f32 = 0.1;

/// Named weights with their bytes, from safetensors files or generated in memory.
///
/// Tensor bytes are little-endian as stored; views are zero-copy into the memory map.
pub struct Checkpoint {
    /// What was opened (a directory, a file, or a `<built-in ...>` pseudo path): named by errors
    /// about missing tensors.
    origin: PathBuf,
    files: Vec<Blob>,
    /// By name, sorted.
    tensors: BTreeMap<String, Entry>,
}

/// One file's bytes (or the in-memory buffer of random weights) and the path that names it.
struct Blob {
    path: PathBuf,
    bytes: Bytes,
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Where a tensor lives: file index, safetensors dtype, shape, absolute byte range in the file.
struct Entry {
    file: usize,
    dtype: StDtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// The IR dtype of a safetensors dtype, or `None` when braid cannot hold it as a weight.
fn ir_dtype(dtype: StDtype) -> Option<DType> {
    match dtype {
        StDtype::BF16 => Some(DType::BF16),
        StDtype::F16 => Some(DType::F16),
        StDtype::F32 => Some(DType::F32),
        StDtype::I32 => Some(DType::I32),
        _ => None,
    }
}

impl Checkpoint {
    /// Opens a checkpoint: a directory (holding `model.safetensors` or
    /// `model.safetensors.index.json`), a `.safetensors` file, or an `.index.json` file. Files are
    /// memory-mapped; every header is parsed and checked now, tensor bytes are read on use.
    ///
    /// Errors: [`LoadError::NoCheckpoint`] for a directory with neither file, [`LoadError::Io`],
    /// [`LoadError::Safetensors`] for a truncated or corrupt file (with safetensors' own message),
    /// [`LoadError::Json`] / [`LoadError::MissingField`] / [`LoadError::Index`] for a bad index.
    pub fn open(path: &Path) -> Result<Checkpoint, LoadError> {
        if path.is_dir() {
            let single = path.join(SINGLE_FILE);
            let index = path.join(INDEX_FILE);
            if single.is_file() {
                Checkpoint::open_files(path, &[single])
            } else if index.is_file() {
                Checkpoint::open_index(&index)
            } else {
                Err(LoadError::NoCheckpoint {
                    path: path.into(),
                    expected: format!("{SINGLE_FILE} or {INDEX_FILE} in this directory"),
                })
            }
        } else if path.to_string_lossy().ends_with(".index.json") {
            Checkpoint::open_index(path)
        } else {
            Checkpoint::open_files(path, &[path.to_path_buf()])
        }
    }

    /// Reads a sharded checkpoint's index and opens its shards (paths relative to the index).
    fn open_index(index: &Path) -> Result<Checkpoint, LoadError> {
        let text = std::fs::read_to_string(index).map_err(|e| {
            LoadError::io(
                index,
                "a safetensors index (model.safetensors.index.json)",
                e,
            )
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| LoadError::json(index, &e))?;
        let Some(map) = value.get("weight_map") else {
            return Err(LoadError::MissingField {
                path: index.into(),
                field: "weight_map".into(),
                expected: "an object mapping each tensor name to its shard file".into(),
            });
        };
        let Some(map) = map.as_object() else {
            return Err(LoadError::InvalidField {
                path: index.into(),
                field: "weight_map".into(),
                found: map.to_string(),
                expected: "an object mapping each tensor name to its shard file".into(),
            });
        };
        let mut weight_map = BTreeMap::new();
        for (name, file) in map {
            let Some(file) = file.as_str() else {
                return Err(LoadError::InvalidField {
                    path: index.into(),
                    field: format!("weight_map.{name}"),
                    found: file.to_string(),
                    expected: "a shard file name (string)".into(),
                });
            };
            weight_map.insert(name.as_str(), file);
        }
        let dir = index.parent().unwrap_or(Path::new("."));
        let shards: BTreeSet<&str> = weight_map.values().copied().collect();
        let paths: Vec<PathBuf> = shards.iter().map(|f| dir.join(f)).collect();
        let ckpt = Checkpoint::open_files(index, &paths)?;
        for (name, file) in &weight_map {
            let shard = dir.join(file);
            let held_by = ckpt.tensors.get(*name).map(|e| &ckpt.files[e.file].path);
            if held_by != Some(&shard) {
                return Err(LoadError::Index {
                    path: index.into(),
                    msg: format!(
                        "weight_map puts tensor `{name}` in {file}, but {}",
                        match held_by {
                            Some(other) => format!("it is in {}", other.display()),
                            None => format!("{} does not contain it", shard.display()),
                        }
                    ),
                });
            }
        }
        Ok(ckpt)
    }

    /// Maps and parses safetensors files; a tensor name may occur in only one of them.
    fn open_files(origin: &Path, paths: &[PathBuf]) -> Result<Checkpoint, LoadError> {
        let mut ckpt = Checkpoint {
            origin: origin.into(),
            files: Vec::with_capacity(paths.len()),
            tensors: BTreeMap::new(),
        };
        for path in paths {
            let file =
                File::open(path).map_err(|e| LoadError::io(path, "a safetensors file", e))?;
            // SAFETY: the map is read-only and lives as long as the checkpoint. Another process
            // truncating or rewriting the file while it is mapped is undefined behaviour that
            // memory-mapped loading cannot exclude (the same contract as every mmap loader).
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| LoadError::io(path, "a memory-mappable safetensors file", e))?;
            check_data_offsets(path, &map)?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&map).map_err(|e| LoadError::Safetensors {
                    path: path.clone(),
                    msg: e.to_string(),
                })?;
            let data_start = 8 + header_len;
            let file_index = ckpt.files.len();
            for (name, info) in metadata.tensors() {
                if let Some(prev) = ckpt.tensors.get(&name) {
                    return Err(LoadError::Index {
                        path: origin.into(),
                        msg: format!(
                            "tensor `{name}` occurs in both {} and {}",
                            ckpt.files[prev.file].path.display(),
                            path.display()
                        ),
                    });
                }
                let (a, b) = info.data_offsets;
                ckpt.tensors.insert(
                    name,
                    Entry {
                        file: file_index,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: data_start + a,
                        end: data_start + b,
                    },
                );
            }
            ckpt.files.push(Blob {
                path: path.clone(),
                bytes: Bytes::Mapped(map),
            });
        }
        Ok(ckpt)
    }

    /// Seeded random bf16 weights for every tensor of `config` ([`Qwen3Config::tensor_specs`]),
    /// held in memory. Matmul and embedding weights are `N(0, 0.02²)` ([`RANDOM_STD`]), rms_norm
    /// gains `1 + N(0, 0.1²)` ([`RANDOM_NORM_NOISE`]), biases `N(0, 0.1²)` ([`RANDOM_BIAS_STD`]),
    /// as `scripts/make_checkpoint.py` draws them (with a different generator, so the values
    /// differ).
    ///
    /// Deterministic: each tensor draws from its own ChaCha8 stream seeded by `seed` and the
    /// tensor's name, so a tensor's values do not depend on the other tensors or their order.
    /// Works for any config; for [`Qwen3Config::tiny`] it is ~20 MB, mostly the embedding.
    pub fn random(config: &Qwen3Config, seed: u64) -> Checkpoint {
        let specs = config.tensor_specs();
        let total: usize = specs
            .iter()
            .map(|s| s.shape.iter().product::<usize>() * 2)
            .sum();
        let mut bytes = Vec::with_capacity(total);
        let mut tensors = BTreeMap::new();
        for spec in specs {
            let n: usize = spec.shape.iter().product();
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(spec.name.as_bytes()));
            let (mean, std) = match spec.role {
                TensorRole::Norm => (1.0, RANDOM_NORM_NOISE),
                TensorRole::Embedding | TensorRole::Linear => (0.0, RANDOM_STD),
                TensorRole::Bias => (0.0, RANDOM_BIAS_STD),
            };
            let start = bytes.len();
            let mut left = n;
            while left > 0 {
                let (a, b) = gaussian_pair(&mut rng);
                for z in [a, b].into_iter().take(left) {
                    bytes.extend_from_slice(&bf16::from_f32(mean + std * z).to_le_bytes());
                    left -= 1;
                }
            }
            tensors.insert(
                spec.name,
                Entry {
                    file: 0,
                    dtype: StDtype::BF16,
                    shape: spec.shape,
                    start,
                    end: bytes.len(),
                },
            );
        }
        let path = PathBuf::from(format!("<built-in random bf16 weights, seed {seed}>"));
        Checkpoint {
            origin: path.clone(),
            files: vec![Blob {
                path,
                bytes: Bytes::Owned(bytes),
            }],
            tensors,
        }
    }

    /// What was opened: the directory or file given to [`Checkpoint::open`], or a
    /// `<built-in ...>` pseudo path for [`Checkpoint::random`].
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The files the tensors come from (one, or the shards in name order).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|b| b.path.as_path())
    }

    /// All tensor names, sorted.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total size of all tensors' data in bytes (Qwen3-0.6B bf16: 1.19 GB with tied embeddings).
    pub fn total_bytes(&self) -> usize {
        self.tensors.values().map(|e| e.end - e.start).sum()
    }

    /// The file that holds tensor `name`, if present.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.tensors
            .get(name)
            .map(|e| self.files[e.file].path.as_path())
    }

    /// Tensor `name` as an IR view (dtype bf16/f16/f32/i32, shape, raw bytes), with errors.
    ///
    /// Errors: [`LoadError::MissingTensor`] (naming the checkpoint, with an empty expected shape
    /// since none is known here), [`LoadError::TensorDtype`] for a safetensors dtype the IR has
    /// no type for (e.g. F64, I64, U8, F8), naming the tensor and its file.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, LoadError> {
        let Some(entry) = self.tensors.get(name) else {
            return Err(LoadError::MissingTensor {
                path: self.origin.clone(),
                tensor: name.into(),
                expected: Vec::new(),
            });
        };
        let blob = &self.files[entry.file];
        let Some(dtype) = ir_dtype(entry.dtype) else {
            return Err(LoadError::TensorDtype {
                path: blob.path.clone(),
                tensor: name.into(),
                found: entry.dtype.to_string(),
                expected: "BF16, F16, F32 or I32".into(),
            });
        };
        Ok(TensorView {
            dtype,
            shape: &entry.shape,
            bytes: &blob.bytes.as_slice()[entry.start..entry.end],
        })
    }

    /// Checks that every tensor `config` needs ([`Qwen3Config::tensor_specs`]) is present with
    /// the expected shape and a float dtype (BF16, F16 or F32). Extra tensors are allowed.
    ///
    /// Errors: [`LoadError::MissingTensor`] naming the checkpoint (the index for a sharded one)
    /// and the expected shape; [`LoadError::TensorShape`] / [`LoadError::TensorDtype`] naming the
    /// tensor, the file holding it, expected and found.
    pub fn validate(&self, config: &Qwen3Config) -> Result<(), LoadError> {
        for spec in config.tensor_specs() {
            let Some(entry) = self.tensors.get(&spec.name) else {
                return Err(LoadError::MissingTensor {
                    path: self.origin.clone(),
                    tensor: spec.name,
                    expected: spec.shape,
                });
            };
            let path = &self.files[entry.file].path;
            if !matches!(entry.dtype, StDtype::BF16 | StDtype::F16 | StDtype::F32) {
                return Err(LoadError::TensorDtype {
                    path: path.clone(),
                    tensor: spec.name,
                    found: entry.dtype.to_string(),
                    expected: "a float dtype: BF16, F16 or F32".into(),
                });
            }
            if entry.shape != spec.shape {
                return Err(LoadError::TensorShape {
                    path: path.clone(),
                    tensor: spec.name,
                    expected: spec.shape,
                    found: entry.shape.clone(),
                });
            }
        }
        Ok(())
    }
}

impl Checkpoint {
    /// The tensors of the checkpoint that a Qwen3 model of shape `config` does not read, sorted
    /// (a checkpoint of another architecture, or extra heads); loading warns about them.
    pub fn unexpected_tensors(&self, config: &Qwen3Config) -> Vec<&str> {
        let wanted: BTreeSet<String> = config.tensor_specs().into_iter().map(|s| s.name).collect();
        self.tensors
            .keys()
            .filter(|name| !wanted.contains(*name))
            .map(String::as_str)
            .collect()
    }

    /// Number of weight elements (parameters) over all tensors.
    pub fn parameters(&self) -> u64 {
        self.tensors
            .values()
            .map(|e| e.shape.iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }

    /// The dtypes of the tensors, most bytes first, as `bf16` or `bf16+f32`.
    pub fn dtype_summary(&self) -> String {
        let mut bytes: BTreeMap<String, usize> = BTreeMap::new();
        for e in self.tensors.values() {
            *bytes
                .entry(e.dtype.to_string().to_ascii_lowercase())
                .or_default() += e.end - e.start;
        }
        let mut v: Vec<(String, usize)> = bytes.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(d, _)| d).collect::<Vec<_>>().join("+")
    }

    /// Checks that every element of the float tensors named in `names` is finite: a NaN or an
    /// infinity in a weight would only surface later as NaN logits. `progress(bytes)` is called as
    /// bytes are scanned.
    ///
    /// Errors: [`LoadError::InvalidTensor`] naming the tensor, its file, the first bad element
    /// and its value.
    pub fn check_finite<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), LoadError> {
        for name in names {
            let Some(entry) = self.tensors.get(name) else {
                continue;
            };
            let bytes = &self.files[entry.file].bytes.as_slice()[entry.start..entry.end];
            let bad = match entry.dtype {
                // bf16 / f16 / f32: every exponent bit set means an infinity or a NaN.
                StDtype::BF16 => first_non_finite(bytes, 2, |b| {
                    let v = u16::from_le_bytes([b[0], b[1]]);
                    (v & 0x7f80 == 0x7f80).then(|| bf16::from_bits(v).to_f32())
                }),
                StDtype::F16 => first_non_finite(bytes, 2, |b| {
                    let v = u16::from_le_bytes([b[0], b[1]]);
                    (v & 0x7c00 == 0x7c00).then(|| half::f16::from_bits(v).to_f32())
                }),
                StDtype::F32 => first_non_finite(bytes, 4, |b| {
                    let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    (!v.is_finite()).then_some(v)
                }),
                _ => None,
            };
            progress(bytes.len() as u64);
            if let Some((index, value)) = bad {
                return Err(LoadError::InvalidTensor {
                    path: self.files[entry.file].path.clone(),
                    tensor: name.to_string(),
                    msg: format!(
                        "element {index} is {value} (of shape {:?}); weights must be finite numbers",
                        entry.shape
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The index and value of the first element of `bytes` (elements of `size` bytes) that `bad`
/// flags, scanning in chunks.
fn first_non_finite(
    bytes: &[u8],
    size: usize,
    bad: impl Fn(&[u8]) -> Option<f32>,
) -> Option<(usize, f32)> {
    bytes
        .chunks_exact(size)
        .enumerate()
        .find_map(|(i, b)| bad(b).map(|v| (i, v)))
}

impl WeightSource for Checkpoint {
    /// The weight called `name`; `None` when absent or of a dtype the IR cannot hold (use
    /// [`Checkpoint::tensor`] for the reason).
    fn get(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor(name).ok()
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("files", &self.files.len())
            .field("tensors", &self.tensors.len())
            .field("total_bytes", &self.total_bytes())
            .finish()
    }
}

/// Two independent standard normal samples from two uniforms (Box-Muller transform).
fn gaussian_pair(rng: &mut ChaCha8Rng) -> (f32, f32) {
    // 1 - u keeps the logarithm's argument in (0, 1].
    let u1: f32 = 1.0 - rng.random::<f32>();
    let u2: f32 = rng.random::<f32>();
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
    (r * c, r * s)
}

/// 64-bit FNV-1a hash: a stable per-tensor seed offset (std's hasher is not stable across
/// releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checks the safetensors header before the safetensors crate does, so that the message names the
/// tensor at fault: a name listed twice, `data_offsets` past the end of the file (offsets near
/// `usize::MAX` overflow in the crate; found by `tests/fuzz_loaders.rs`), an end before its start,
/// a byte range that does not match the shape and dtype, two tensors whose bytes overlap, and bytes
/// that belong to no tensor. Header syntax errors are left to the safetensors crate to report.
fn check_data_offsets(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let bad = |msg: String| LoadError::Safetensors {
        path: path.into(),
        msg,
    };
    let Some(len_bytes) = bytes.get(..8) else {
        return Ok(());
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
    let data_len = (bytes.len() as u64 - 8).saturating_sub(header_len);
    let end = usize::try_from(header_len)
        .ok()
        .and_then(|n| n.checked_add(8));
    let Some(header) = end.and_then(|end| bytes.get(8..end)) else {
        return Ok(());
    };
    let Ok(HeaderEntries(entries)) = serde_json::from_slice::<HeaderEntries>(header) else {
        return Ok(());
    };
    let mut seen = BTreeSet::new();
    // (start, end, name) of every tensor with well-formed offsets.
    let mut ranges: Vec<(u64, u64, &str)> = Vec::new();
    for (name, entry) in &entries {
        if !seen.insert(name.as_str()) {
            return Err(bad(format!(
                "tensor `{name}` is listed twice in the header (each name may occur once)"
            )));
        }
        if name == "__metadata__" {
            continue;
        }
        let Some(offsets) = entry.get("data_offsets").and_then(|o| o.as_array()) else {
            continue;
        };
        let shown = Value::Array(offsets.clone());
        for o in offsets {
            if o.as_u64().is_some_and(|o| o > data_len) {
                return Err(bad(format!(
                    "truncated or corrupt: tensor `{name}` has data_offsets {shown} past the end of \
                     the data ({data_len} bytes)"
                )));
            }
        }
        let [Some(a), Some(b)] =
            [offsets.first(), offsets.get(1)].map(|o| o.and_then(Value::as_u64))
        else {
            continue;
        };
        if offsets.len() != 2 {
            continue;
        }
        if b < a {
            return Err(bad(format!(
                "tensor `{name}` has data_offsets {shown}: its end is before its start"
            )));
        }
        let shape: Option<Vec<u64>> = entry
            .get("shape")
            .and_then(|v| v.as_array())
            .and_then(|dims| dims.iter().map(Value::as_u64).collect());
        let elem = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .and_then(dtype_bytes);
        if let (Some(shape), Some(elem)) = (shape, elem) {
            let want = shape.iter().try_fold(elem, |acc, &d| acc.checked_mul(d));
            if want != Some(b - a) {
                return Err(bad(format!(
                    "tensor `{name}` has shape {shape:?} of dtype {}, which is {} bytes, but its \
                     data_offsets {shown} span {} bytes",
                    entry.get("dtype").and_then(|d| d.as_str()).unwrap_or("?"),
                    want.map_or_else(|| "more than 2^64".to_string(), |w| w.to_string()),
                    b - a
                )));
            }
        }
        ranges.push((a, b, name.as_str()));
    }
    ranges.sort();
    let mut covered = 0u64;
    let mut prev: Option<(u64, u64, &str)> = None;
    for &(a, b, name) in &ranges {
        if a == b {
            continue; // an empty tensor occupies no bytes
        }
        if a < covered {
            let (pa, pb, pname) = prev.unwrap_or((0, covered, "?"));
            return Err(bad(format!(
                "the bytes of tensors `{pname}` (data_offsets [{pa}, {pb}]) and `{name}` \
                 (data_offsets [{a}, {b}]) overlap"
            )));
        }
        if a > covered {
            let after = prev.map_or_else(
                || "the start of the data".to_string(),
                |(_, _, p)| format!("tensor `{p}`"),
            );
            return Err(bad(format!(
                "bytes {covered}..{a} between {after} and tensor `{name}` belong to no tensor"
            )));
        }
        covered = b;
        prev = Some((a, b, name));
    }
    Ok(())
}

/// Bytes per element of a safetensors dtype name, `None` for a name this check does not know.
fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "BF16" | "F16" | "I16" | "U16" => 2,
        "F32" | "I32" | "U32" => 4,
        "F64" | "I64" | "U64" => 8,
        _ => return None,
    })
}

/// A JSON object's entries in file order, duplicates kept (serde_json's `Map` keeps only the last).
struct HeaderEntries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for HeaderEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<HeaderEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(HeaderEntries(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

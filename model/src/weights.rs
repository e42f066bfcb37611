//! Weights in the Hugging Face layout: `config.json` and `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), tensors named as transformers names them. Loading checks
//! every tensor's presence and shape and names the first that does not fit, so a corrupt or
//! mismatched checkpoint is refused before anything is replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::Digest as _;
use tch::{Device, Kind, Tensor, nn};

use crate::config::LlamaConfig;
use crate::llama::Llama;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A model with its variables.
pub struct Loaded {
    pub vs: nn::VarStore,
    pub model: Llama,
    /// LoRA adapters (their own VarStore) and their config, when the model is adapted.
    pub lora: Option<(nn::VarStore, crate::lora::LoraConfig)>,
}

impl Loaded {
    /// A freshly initialised model (deterministic for a given `seed`).
    pub fn fresh(config: &LlamaConfig, device: Device, seed: i64) -> anyhow::Result<Self> {
        Self::fresh_in(config, device, seed, Kind::Float)
    }

    /// `fresh` with weights (and so compute) in `kind`: `Kind::Float` or `Kind::BFloat16`.
    pub fn fresh_in(
        config: &LlamaConfig,
        device: Device,
        seed: i64,
        kind: Kind,
    ) -> anyhow::Result<Self> {
        config.check()?;
        anyhow::ensure!(
            matches!(kind, Kind::Float | Kind::BFloat16),
            "compute precision {kind:?}: float32 or bfloat16"
        );
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let model = seeded(seed, || Llama::new(&vs.root(), config));
        Ok(Self {
            vs,
            model,
            lora: None,
        })
    }

    /// The model in `dir` (`config.json` and its safetensors).
    pub fn load(dir: &Path, device: Device) -> anyhow::Result<Self> {
        Self::load_in(dir, device, Kind::Float)
    }

    /// `load` with weights (and so compute) in `kind` (`Precision::kind`).
    pub fn load_in(dir: &Path, device: Device, kind: Kind) -> anyhow::Result<Self> {
        let config = LlamaConfig::load(&dir.join(CONFIG_FILE))?;
        let mut loaded = Self::fresh_in(&config, device, 0, kind)?;
        let files = weight_files(dir)?;
        load_checkpoint(&mut loaded.vs, &files)?;
        Ok(loaded)
    }

    /// Writes `config.json` and `model.safetensors` into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = serde_json::to_vec_pretty(self.model.config())?;
        write_atomic(&dir.join(CONFIG_FILE), |tmp| {
            Ok(std::fs::write(tmp, &config)?)
        })?;
        save_weights(&self.vs, &dir.join(WEIGHTS_FILE))
    }
}

/// The precision a model computes in: `auto` is bf16 on CUDA and f32 elsewhere. In bf16 the
/// weights, activations and KV cache are bf16; RMSNorm, the attention softmax, the rotary tables
/// and the logits (so every logprob and sampling) are f32, as in transformers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Auto,
    Float32,
    BFloat16,
}

impl Precision {
    pub fn kind(self, device: Device) -> Kind {
        match self {
            Self::Float32 => Kind::Float,
            Self::BFloat16 => Kind::BFloat16,
            Self::Auto if device.is_cuda() => Kind::BFloat16,
            Self::Auto => Kind::Float,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "float32" | "f32" => Ok(Self::Float32),
            "bfloat16" | "bf16" => Ok(Self::BFloat16),
            other => Err(format!(
                "{other:?}: expected `auto`, `float32` or `bfloat16`"
            )),
        }
    }
}

/// Runs `f` with libtorch's global generator seeded with `seed`, under one lock, so that models
/// created at once on different threads each get their seed's weights.
pub(crate) fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    static SEEDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = SEEDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed);
    f()
}

/// The safetensors files of the checkpoint in `dir`: the single file, or the index's shards.
pub fn weight_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    let index_path = dir.join(INDEX_FILE);
    let text = std::fs::read_to_string(&index_path)
        .with_context(|| format!("{}: neither {WEIGHTS_FILE} nor {INDEX_FILE}", dir.display()))?;
    let index: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a safetensors index", index_path.display()))?;
    let map = index["weight_map"]
        .as_object()
        .with_context(|| format!("{}: no weight_map", index_path.display()))?;
    let mut shards: Vec<PathBuf> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(|f| dir.join(f))
        .collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// Copies the tensors of `files` into the variables of `vs` (converting dtype and device).
/// Every variable must be present with its shape; tensors the model does not use are ignored
/// (a checkpoint of the trainable part: LoRA adapters, or a trainer's own checkpoint).
pub fn load_weights(vs: &mut nn::VarStore, files: &[PathBuf]) -> anyhow::Result<()> {
    load(vs, files, false)
}

/// `load_weights` for a whole model's checkpoint: a tensor the model does not use is an error
/// naming it (a `mlp_bias` or `q_norm` the config does not announce would otherwise be dropped,
/// computing a different model). Rotary `inv_freq` buffers (recomputed from the config) and
/// `lm_head.weight` beside tied embeddings (transformers ties it to the embeddings on load) are
/// the exceptions.
pub fn load_checkpoint(vs: &mut nn::VarStore, files: &[PathBuf]) -> anyhow::Result<()> {
    load(vs, files, true)
}

fn load(vs: &mut nn::VarStore, files: &[PathBuf], strict: bool) -> anyhow::Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for file in files {
        let read = Tensor::read_safetensors(file).map_err(|e| {
            anyhow::anyhow!("{}: not a readable safetensors file: {e}", file.display())
        })?;
        tensors.extend(read);
    }
    let variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    if strict {
        let tied = !variables.contains_key("lm_head.weight");
        let mut unused: Vec<&String> = tensors
            .keys()
            .filter(|n| !variables.contains_key(*n))
            .filter(|n| !n.ends_with("rotary_emb.inv_freq"))
            .filter(|n| !(tied && n.as_str() == "lm_head.weight"))
            .collect();
        unused.sort();
        if let Some(first) = unused.first() {
            anyhow::bail!(
                "the checkpoint has {} tensor(s) the model does not use, e.g. {first} (the config \
                 does not announce what they compute; loading without them would be a different \
                 model): {}",
                unused.len(),
                unused
                    .iter()
                    .take(8)
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    // Check everything before copying anything: a refused checkpoint leaves the model as it was.
    for name in &names {
        let var = &variables[*name];
        let t = tensors
            .get(*name)
            .with_context(|| format!("tensor {name} missing from the checkpoint"))?;
        anyhow::ensure!(
            t.size() == var.size(),
            "tensor {name} has shape {:?} in the checkpoint, the model expects {:?}",
            t.size(),
            var.size()
        );
    }
    tch::no_grad(|| {
        for name in names {
            let mut var = variables[name].shallow_clone();
            let t = &tensors[name];
            var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
        }
    });
    Ok(())
}

/// Writes every variable of `vs` under its name (the HF layout), atomically.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> anyhow::Result<()> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let stored = named
        .iter()
        .map(|(n, t)| Ok((n.as_str(), Stored::of(t)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // What `save_pretrained` writes: some loaders refuse a file without `format`.
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    write_atomic(path, |tmp| {
        safetensors::tensor::serialize_to_file(stored.iter().map(|(n, s)| (*n, s)), &metadata, tmp)
            .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", tmp.display()))
    })
}

/// A tensor's bytes, as safetensors stores them.
struct Stored {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Stored {
    fn of(t: &Tensor) -> anyhow::Result<Self> {
        use safetensors::Dtype;
        let dtype = match t.kind() {
            Kind::Float => Dtype::F32,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Half => Dtype::F16,
            Kind::Double => Dtype::F64,
            Kind::Int64 => Dtype::I64,
            other => anyhow::bail!("cannot write a {other:?} tensor"),
        };
        let shape = t.size().iter().map(|&d| d as usize).collect();
        let bytes = t.contiguous().view_dtype(Kind::Uint8).flatten(0, -1);
        let data = Vec::<u8>::try_from(&bytes)?;
        Ok(Self { dtype, shape, data })
    }
}

impl safetensors::View for &Stored {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes through a temporary file renamed into place, so a reader never sees half a file.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Hex sha256 and size of a file, read in 1 MiB pieces (a checkpoint can be many GiB).
pub fn sha256_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

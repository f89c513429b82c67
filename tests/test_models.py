"""Model folders: tiny preset, component loading, pipeline, official single-file conversion (CPU, offline)."""

import json
import multiprocessing as mp
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "platform"))

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from ltxtrain.models import bundle, single_file  # noqa: E402
from ltxtrain.models.bundle import (COMPONENTS, build_pipeline, load_components, load_model_info,  # noqa: E402
                                    resolve_model)
from ltxtrain.models.single_file import (MissingWeightsError, UnexpectedWeightsError,  # noqa: E402
                                         convert_single_file, detect_family, original_keys_from_diffusers)
from ltxtrain.models.tiny import MAX_SEQUENCE_LENGTH, build_tiny_components, video_vae_config  # noqa: E402

torch.set_num_threads(2)
MODULES = ("transformer", "vae", "audio_vae", "connectors", "vocoder", "text_encoder")
FAMILIES = ("ltx-2.0", "ltx-2.3")
NO_GUIDANCE = dict(guidance_scale=1.0, stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0,
                   audio_modality_scale=1.0, audio_guidance_scale=1.0, guidance_rescale=0.0,
                   audio_guidance_rescale=0.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("model-cache"))


@pytest.fixture(scope="module")
def tiny_dirs(cache):
    return {"ltx-2.3": resolve_model("tiny", cache), "ltx-2.0": resolve_model("tiny-2.0", cache)}


def assert_same_modules(a: dict, b: dict, names=MODULES):
    for n in names:
        sa, sb = a[n].state_dict(), b[n].state_dict()
        assert sa.keys() == sb.keys(), (n, sorted(set(sa) ^ set(sb))[:5])
        bad = [k for k in sa if sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k].to(sa[k].dtype))]
        assert not bad, (n, bad[:5])


# ------------------------------------------------------------------------------------------------------------ tiny
def test_tiny_resolves_once(cache, tiny_dirs, monkeypatch):
    d = tiny_dirs["ltx-2.3"]
    assert os.path.basename(d) == "tiny-2.3"
    for sub in COMPONENTS:
        assert os.path.isdir(os.path.join(d, sub)), sub
    assert os.path.isfile(os.path.join(d, "model_index.json"))
    mtimes = {f: os.path.getmtime(os.path.join(d, sub, f)) for sub in ("transformer",)
              for f in os.listdir(os.path.join(d, sub))}

    def boom(*a, **k):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(bundle, "build_tiny_components", boom)
    assert resolve_model("tiny", cache) == d
    assert resolve_model("tiny-2.3", cache) == d
    assert mtimes == {f: os.path.getmtime(os.path.join(d, "transformer", f)) for f in mtimes}
    info = load_model_info(d)
    assert (info.family, info.max_sequence_length, info.source) == ("ltx-2.3", MAX_SEQUENCE_LENGTH, "tiny")
    assert load_model_info(tiny_dirs["ltx-2.0"]).family == "ltx-2.0"
    # an existing diffusers folder is returned as is
    assert resolve_model(d, os.path.join(cache, "other")) == d
    assert not os.path.exists(os.path.join(cache, "other"))
    with pytest.raises(ValueError):
        resolve_model("Lightricks/LTX-2", cache)


def _resolve_worker(cache_dir, q):
    q.put(resolve_model("tiny-2.0", cache_dir))


def test_tiny_concurrent_builders(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_resolve_worker, args=(str(tmp_path), q)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    paths = {q.get(timeout=5) for _ in procs}
    assert paths == {str(tmp_path / "tiny-2.0")}
    assert sorted(x for x in os.listdir(tmp_path) if not x.startswith(".")) == ["tiny-2.0"]
    assert not [x for x in os.listdir(tmp_path) if ".tmp-" in x]


@pytest.mark.parametrize("family", FAMILIES)
def test_load_components_same_as_built(tiny_dirs, family):
    built = build_tiny_components(family, seed=bundle.TINY_SEED)
    loaded = load_components(tiny_dirs[family], COMPONENTS)
    assert set(loaded) == set(COMPONENTS)
    assert_same_modules(built, loaded)
    assert type(loaded["vocoder"]).__name__ == ("LTX2VocoderWithBWE" if family == "ltx-2.3" else "LTX2Vocoder")
    prompt = "A red ball bouncing slowly, zorblax video"
    assert built["tokenizer"](prompt).input_ids == loaded["tokenizer"](prompt).input_ids
    ids = loaded["tokenizer"](prompt).input_ids
    assert ids[0] == loaded["tokenizer"].bos_token_id and loaded["tokenizer"].unk_token_id in ids
    strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert strip(built["scheduler"].config) == strip(loaded["scheduler"].config)
    only = load_components(tiny_dirs[family], ["transformer", "tokenizer"])
    assert set(only) == {"transformer", "tokenizer"}
    half = load_components(tiny_dirs[family], ["connectors"], dtype=torch.bfloat16)["connectors"]
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_shape_rules(tiny_dirs, family):
    c = load_components(tiny_dirs[family], ["transformer", "vae", "audio_vae", "connectors", "vocoder"])
    tr, vae, avae = c["transformer"].config, c["vae"], c["audio_vae"].config
    assert (vae.temporal_compression_ratio, vae.spatial_compression_ratio) == (8, 32)
    assert tuple(tr.vae_scale_factors) == (8, 32, 32)
    assert tr.in_channels == vae.config.latent_channels
    assert tr.audio_in_channels == avae.latent_channels * avae.mel_bins // 4 == avae.base_channels
    assert MAX_SEQUENCE_LENGTH % c["connectors"].config.video_connector_num_learnable_registers == 0
    assert tr.perturbed_attn == (family == "ltx-2.3")
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 9, 64, 96)).latent_dist.mode()
    assert tuple(z.shape) == (1, tr.in_channels, 2, 2, 3)


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_generates(tiny_dirs, family):
    pipe = build_pipeline(tiny_dirs[family])
    out = pipe(prompt="a blue cube rotating", negative_prompt="", height=64, width=64, num_frames=9,
               frame_rate=24.0, num_inference_steps=2, max_sequence_length=MAX_SEQUENCE_LENGTH, output_type="pt",
               generator=torch.Generator().manual_seed(0), **NO_GUIDANCE)
    assert tuple(out.frames.shape) == (1, 9, 3, 64, 64)
    assert out.audio.ndim == 3 and out.audio.shape[1] == 2 and out.audio.shape[2] > 0
    assert torch.isfinite(out.frames).all() and torch.isfinite(out.audio).all()
    if family == "ltx-2.3":  # STG is a real extra pass (perturbed_attn=True)
        kw = dict(NO_GUIDANCE, stg_scale=1.0, audio_stg_scale=1.0)
        stg = pipe(prompt="a blue cube rotating", height=64, width=64, num_frames=9, num_inference_steps=2,
                   max_sequence_length=MAX_SEQUENCE_LENGTH, output_type="pt",
                   generator=torch.Generator().manual_seed(0), spatio_temporal_guidance_blocks=[1], **kw)
        assert not torch.allclose(stg.frames, out.frames)


# ------------------------------------------------------------------------------------------------------ single file
def _write_ckpt(path, comps, metadata=None, drop=(), dtype=None):
    sd = original_keys_from_diffusers(comps)
    for k in drop:
        sd.pop(k)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    save_file(sd, path, metadata=metadata)
    return sd


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_round_trip(tmp_path, tiny_dirs, family):
    src = load_components(tiny_dirs[family], COMPONENTS)
    path = str(tmp_path / f"{family}-tiny-dev.safetensors")
    sd = _write_ckpt(path, src)
    assert any(k.startswith("model.diffusion_model.transformer_blocks.0.attn1.to_q") for k in sd)
    assert any(k.startswith("model.diffusion_model.video_embeddings_connector.") for k in sd)
    assert any(k.startswith("text_embedding_projection.") for k in sd)
    assert any(k.startswith("vae.per_channel_statistics.mean-of-means") for k in sd)
    assert all(k.split(".")[0] in ("model", "vae", "audio_vae", "vocoder", "text_embedding_projection") for k in sd)
    if family == "ltx-2.3":
        assert any("prompt_adaln_single" in k for k in sd)
        assert any(k.startswith("vae.decoder.up_blocks.8.") for k in sd)  # the 2.3 decoder layout
    assert detect_family(sd) == family

    out = convert_single_file(path, str(tmp_path / "converted"), config_dir=tiny_dirs[family],
                              text_encoder=tiny_dirs[family])
    info = load_model_info(out)
    assert (info.family, info.source, info.max_sequence_length) == (family, "single_file", MAX_SEQUENCE_LENGTH)
    loaded = load_components(out, COMPONENTS)
    assert_same_modules(src, loaded)
    for m in loaded.values():
        if isinstance(m, torch.nn.Module):
            assert not any(p.device.type == "meta" for p in m.parameters())
    index = json.load(open(os.path.join(out, "model_index.json")))
    assert index["vocoder"][1] == type(src["vocoder"]).__name__
    # the converted folder is a normal model folder
    assert resolve_model(out, str(tmp_path / "cache")) == out
    if family == "ltx-2.3":
        pipe = build_pipeline(out)
        # (num_inference_steps=1 would give NaN sigmas: shift_terminal=0.1 of the real scheduler config)
        res = pipe(prompt="a cat", height=32, width=32, num_frames=9, num_inference_steps=2,
                   max_sequence_length=MAX_SEQUENCE_LENGTH, output_type="pt", **NO_GUIDANCE)
        assert tuple(res.frames.shape) == (1, 9, 3, 32, 32) and torch.isfinite(res.frames).all()


def test_single_file_missing_tensor_is_named(tmp_path, tiny_dirs):
    src = load_components(tiny_dirs["ltx-2.3"], MODULES[:-1])
    gone = "model.diffusion_model.transformer_blocks.1.attn2.to_k.weight"
    path = str(tmp_path / "broken.safetensors")
    _write_ckpt(path, src, drop=[gone])
    with pytest.raises(MissingWeightsError, match=gone.replace(".", r"\.")):
        convert_single_file(path, str(tmp_path / "out"), config_dir=tiny_dirs["ltx-2.3"])
    assert not os.path.exists(tmp_path / "out")
    assert not [x for x in os.listdir(tmp_path) if ".tmp-" in x]
    # a missing 2.3-only tensor (the prompt AdaLN that diffusers 0.42.1 silently leaves random)
    gone = next(k for k in original_keys_from_diffusers({"transformer": src["transformer"]})
                if k.startswith("model.diffusion_model.prompt_adaln_single."))
    _write_ckpt(path, src, drop=[gone])
    with pytest.raises(MissingWeightsError, match=gone.replace(".", r"\.")):
        convert_single_file(path, str(tmp_path / "out"), config_dir=tiny_dirs["ltx-2.3"])
    # a VAE tensor and a vocoder tensor
    for gone in ("vae.per_channel_statistics.std-of-means", "vocoder.bwe_generator.conv_pre.weight"):
        _write_ckpt(path, src, drop=[gone])
        with pytest.raises(MissingWeightsError, match=gone.replace(".", r"\.")):
            convert_single_file(path, str(tmp_path / "out"), config_dir=tiny_dirs["ltx-2.3"])


def test_single_file_unexpected_and_family_mismatch(tmp_path, tiny_dirs):
    src = load_components(tiny_dirs["ltx-2.0"], MODULES[:-1])
    sd = original_keys_from_diffusers(src)
    sd["model.diffusion_model.transformer_blocks.7.attn1.to_q.weight"] = torch.zeros(2, 2)
    path = str(tmp_path / "extra.safetensors")
    save_file(sd, path)
    with pytest.raises(UnexpectedWeightsError, match="transformer_blocks.7"):
        convert_single_file(path, str(tmp_path / "out"), config_dir=tiny_dirs["ltx-2.0"])
    out = convert_single_file(path, str(tmp_path / "out"), config_dir=tiny_dirs["ltx-2.0"], strict=False)
    assert_same_modules(src, load_components(out, MODULES[:-1]), MODULES[:-1])
    with pytest.raises(FileExistsError):
        convert_single_file(path, out, config_dir=tiny_dirs["ltx-2.0"], strict=False)
    # a tensor of the wrong shape
    bad = dict(sd)
    bad.pop("model.diffusion_model.transformer_blocks.7.attn1.to_q.weight")
    bad["vae.decoder.conv_in.conv.weight"] = torch.zeros(3, 3)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"vae\.decoder\.conv_in\.conv\.weight: checkpoint \(3, 3\)"):
        convert_single_file(str(tmp_path / "bad.safetensors"), str(tmp_path / "out3"), config_dir=tiny_dirs["ltx-2.0"])
    # a 2.0 checkpoint against 2.3 configs fails loudly instead of loading garbage
    with pytest.raises((MissingWeightsError, UnexpectedWeightsError)):
        convert_single_file(path, str(tmp_path / "out2"), family="ltx-2.3", config_dir=tiny_dirs["ltx-2.3"],
                            strict=False)


def test_single_file_metadata_family_dtype_and_resolve(tmp_path, tiny_dirs, monkeypatch):
    src = load_components(tiny_dirs["ltx-2.3"], MODULES)
    meta = {"config": json.dumps({"transformer": {"apply_gated_attention": True, "cross_attention_adaln": True,
                                                  "caption_proj_before_connector": True}})}
    path = str(tmp_path / "ltx-2.3-tiny-dev.safetensors")
    _write_ckpt(path, src, metadata=meta, dtype=torch.bfloat16)
    assert detect_family([], meta) == "ltx-2.3"
    assert detect_family([], {"config": json.dumps({"transformer": {"num_layers": 48}})}) == "ltx-2.0"
    # the checkpoint's precision is kept on disk; load_components casts
    out = convert_single_file(path, str(tmp_path / "conv"), config_dir=tiny_dirs["ltx-2.3"])
    raw = load_file(os.path.join(out, "transformer", "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in raw.values()} == {torch.bfloat16}
    tr = load_components(out, ["transformer"])["transformer"]
    ref = src["transformer"].state_dict()
    assert all(torch.equal(v, ref[k].to(torch.bfloat16).float()) for k, v in tr.state_dict().items())

    # resolve_model converts once into cache_dir/<stem>; the text encoder can be linked in later
    cache = str(tmp_path / "cache")
    orig, calls = single_file.convert_single_file, []

    def convert(p, o, **kw):
        calls.append(p)
        return orig(p, o, config_dir=tiny_dirs["ltx-2.3"], **kw)  # tiny configs instead of the real ones

    monkeypatch.setattr(single_file, "convert_single_file", convert)
    d = resolve_model(path, cache)
    assert d == os.path.join(cache, "ltx-2.3-tiny-dev")
    assert not os.path.exists(os.path.join(d, "text_encoder"))
    with pytest.raises(FileNotFoundError, match="text_encoder"):
        load_components(d, ["text_encoder"])
    assert resolve_model(path, cache, text_encoder=tiny_dirs["ltx-2.3"]) == d
    assert len(calls) == 1
    te = load_components(d, ["text_encoder", "tokenizer"])
    assert_same_modules(src, te, ["text_encoder"])
    index = json.load(open(os.path.join(d, "model_index.json")))
    assert index["text_encoder"][1] == "Gemma3ForConditionalGeneration"


def test_timestep_conditioned_vae_round_trip(tmp_path, tiny_dirs):
    from diffusers import AutoencoderKLLTX2Video

    src = load_components(tiny_dirs["ltx-2.3"], MODULES[:-1])
    torch.manual_seed(3)
    src["vae"] = AutoencoderKLLTX2Video(**dict(video_vae_config("ltx-2.3"), timestep_conditioning=True))
    path = str(tmp_path / "tc.safetensors")
    sd = _write_ckpt(path, src)
    assert any(k.startswith("vae.decoder.last_time_embedder.") for k in sd)
    out = convert_single_file(path, str(tmp_path / "out"), config_dir=tiny_dirs["ltx-2.3"])
    vae = load_components(out, ["vae"])["vae"]
    assert vae.config.timestep_conditioning
    assert_same_modules(src, {"vae": vae}, ["vae"])


def test_vae_mapping_matches_diffusers_converter(tiny_dirs):
    """On the LTX-2.0 layout our general VAE mapping equals diffusers' own single-file converter."""
    from diffusers.loaders.single_file_utils import convert_ltx2_vae_to_diffusers

    vae = load_components(tiny_dirs["ltx-2.0"], ["vae"])["vae"]
    orig = {k: v for k, v in original_keys_from_diffusers({"vae": vae}).items()}
    ours = single_file._video_vae_to_diffusers(dict(orig))
    theirs = convert_ltx2_vae_to_diffusers(dict(orig))
    assert ours.keys() == theirs.keys() == vae.state_dict().keys()


@pytest.mark.parametrize("family", FAMILIES)
def test_packaged_real_configs_key_mapping(family):
    """The packaged real configs build (on meta) at the real sizes, and the key mapping round-trips the full-size
    key sets (48 blocks, the real VAE layouts, the BWE vocoder of LTX-2.3)."""
    from accelerate import init_empty_weights

    cfg_dir = os.path.join(single_file.CONFIGS_DIR, family)
    models = {}
    with init_empty_weights():
        for name in ("transformer", "vae", "audio_vae", "connectors", "vocoder"):
            cfg = single_file._load_config(cfg_dir, name)
            models[name] = single_file._class_for(cfg).from_config(cfg)
    n_tr = sum(p.numel() for p in models["transformer"].parameters())
    n_conn = sum(p.numel() for p in models["connectors"].parameters())
    assert 18.5e9 < n_tr < 19.5e9
    assert (n_tr + n_conn) / 1e9 == pytest.approx(22.2 if family == "ltx-2.3" else 20.3, abs=0.2)
    assert models["transformer"].config.num_layers == 48
    assert (models["vae"].temporal_compression_ratio, models["vae"].spatial_compression_ratio) == (8, 32)
    orig = original_keys_from_diffusers(models)
    assert detect_family(orig) == family
    groups = single_file.component_keys(orig)
    assert not groups["other"]
    conv = {"transformer": single_file._transformer_to_diffusers, "vae": single_file._video_vae_to_diffusers,
            "audio_vae": single_file._audio_vae_to_diffusers, "connectors": single_file._connectors_to_diffusers,
            "vocoder": single_file._vocoder_to_diffusers}
    for name, fn in conv.items():
        got = fn({k: orig[k] for k in groups[name]})
        assert set(got) == set(models[name].state_dict()), name


def test_model_info_inferred_for_plain_diffusers_folder(tmp_path, tiny_dirs):
    for family, d in tiny_dirs.items():
        plain = tmp_path / family
        (plain / "transformer").mkdir(parents=True)
        (plain / "transformer" / "config.json").write_text(open(os.path.join(d, "transformer", "config.json")).read())
        info = load_model_info(str(plain))
        assert (info.family, info.max_sequence_length, info.source) == (family, 1024, "diffusers")


# ------------------------------------------------------------------------------------------- cross-modal routing
def test_every_built_transformer_runs_the_official_cross_modal_routing(tiny_dirs):
    """Tiny preset, diffusers folders (training, validation, serve: load_components / build_pipeline), the meta
    model FSDP ranks build, and a transformer built elsewhere once it goes through predict."""
    from diffusers import LTX2VideoTransformer3DModel

    from ltxtrain.conditioning.tokens import TextContext, audio_tokens, predict, video_tokens
    from ltxtrain.models import cross_modal
    from ltxtrain.models.tiny import transformer_config

    for family, d in tiny_dirs.items():
        want = cross_modal.FAMILY_ROUTING[family]
        assert want == "official"
        assert cross_modal.routing_of(build_tiny_components(family)["transformer"]) == want
        assert cross_modal.routing_of(load_components(d, ["transformer"])["transformer"]) == want
        assert cross_modal.routing_of(bundle.empty_component(d, "transformer")) == want
    assert cross_modal.routing_of(build_pipeline(tiny_dirs["ltx-2.0"]).transformer) == "official"

    torch.manual_seed(0)
    raw = LTX2VideoTransformer3DModel(**transformer_config("ltx-2.0")).eval()
    assert cross_modal.routing_of(raw) is None
    b = 1
    vt = video_tokens(raw.rope, torch.randn(b, 8, 1, 1, 2), torch.tensor([0.5]), fps=24.0,
                      noise=torch.randn(b, 2, 8))
    at = audio_tokens(raw.audio_rope, torch.randn(b, 3, 8), torch.tensor([0.25]), noise=torch.randn(b, 3, 8))
    text = TextContext(torch.randn(b, 4, 32), torch.randn(b, 4, 32), torch.ones(b, 4, dtype=torch.long))
    with torch.no_grad():
        first = predict(raw, vt, text, at)
    assert cross_modal.routing_of(raw) == "official"
    cross_modal.install(raw, "official")  # idempotent
    with pytest.raises(ValueError, match="already runs"):
        cross_modal.install(raw, "cross")
    # the other routings give other outputs (the routing is live, not a label)
    for other in ("own", "cross"):
        m = LTX2VideoTransformer3DModel(**transformer_config("ltx-2.0")).eval()
        m.load_state_dict(raw.state_dict())
        cross_modal.install(m, other)
        with torch.no_grad():
            out = predict(m, vt, text, at)
        assert not torch.allclose(out[1], first[1], atol=1e-6), other

"""Settings of the negative samplers, one typed dataclass per method, with the papers' defaults.

This is the file users edit. Values can also be overridden from conf/LightGCN.yaml
(`params: {rns: {n_negs: 2}}`) or the command line (`--set params.n_negs=2` for the active
sampler, `--set params.rns.n_negs=2` for a named one). Types are checked and coerced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


# The L2 form a sampler's reference code uses, for `reg.form: auto`: CNSDiff's released code is SELFRec's
# (non-squared norms, user683/CNSDiff); the baselines' references (DENS, MixGCF, AHNS modules/LightGCN.py)
# and LightGCN's paper use decay * squared layer-0 norms / 2 / B, which is every other sampler's default
# (ADAR has no public code: it takes LightGCN's).
REFERENCE_REG_FORM: dict[str, str] = {"cnsdiff": "selfrec"}


@dataclass
class RNSParams:
    """Uniform random negatives, rejecting the user's training items (BPR, Rendle et al. 2009)."""

    n_negs: int = 1  # negatives per positive; BPR is averaged over them

    def __post_init__(self) -> None:
        if self.n_negs < 1:
            raise ValueError(f"params.rns.n_negs must be >= 1, got {self.n_negs}")


def _check(owner: str, checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError naming params.<owner> for the first failed check."""
    for ok, message in checks:
        if not ok:
            raise ValueError(f"params.{owner}: {message}")


@dataclass
class PNSParams:
    """Popularity-biased negatives: P(j) proportional to deg(j)^exponent (word2vec-style)."""

    exponent: float = 0.75  # word2vec's unigram^0.75 (Mikolov et al. 2013); RecBole's popularity sampler
    n_negs: int = 1  # negatives per positive; BPR is averaged over them

    def __post_init__(self) -> None:
        _check("pns", [(self.n_negs >= 1, "n_negs must be >= 1"), (self.exponent >= 0, "exponent must be >= 0")])


@dataclass
class DNSParams:
    """Dynamic negative sampling (Zhang et al. SIGIR 2013): the top-scoring of M uniform candidates."""

    n_candidates: int = 32  # M; this repository's default (the MixGCF/DENS reference code sets it per dataset)

    def __post_init__(self) -> None:
        _check("dns", [(self.n_candidates >= 1, "n_candidates must be >= 1")])


@dataclass
class DNSMNParams:
    """DNS(M, N) (Shi et al. WWW 2023): the top N of M uniform candidates, BPR averaged over the N."""

    n_candidates: int = 200  # M; the reference code's example command (--sample_num 200)
    n_negs: int = 2  # N; the reference code's example command (--lambda_w 2)
    # sum: BPR summed over the N negatives (swt-user/WWW_2023_code model.py, loss_type 1: torch.sum over the
    # top N); mean: averaged over them (this repository's rule before the fidelity check)
    reduce: str = "sum"

    def __post_init__(self) -> None:
        _check("dns_mn", [(1 <= self.n_negs <= self.n_candidates, "need 1 <= n_negs <= n_candidates"),
                          (self.reduce in ("sum", "mean"), "reduce must be sum or mean")])


@dataclass
class MixGCFParams:
    """MixGCF (Huang et al. KDD 2021): positive mixing and hop mixing into one synthetic negative."""

    n_candidates: int = 64  # M; the reference code's default --n_negs (and its yelp2018 command)
    # hop mixing's query, huangtinglin/MixGCF modules/LightGCN.py negative_sampling: pooled = the user's pooled
    # (layer-mean) embedding scores every layer's mixed candidates (the reference with pool mean); layer = the
    # user's layer-l embedding scores layer l (the reference with pool concat, and the paper's notation)
    query: str = "pooled"
    # the negative's L2 row, same file, create_bpr_loss: mixed = the mixed layer-0 vector
    # a_0 e_i^(0) + (1 - a_0) e_c^(0) (the reference); winner = the layer-0 winner's own row
    reg: str = "mixed"

    def __post_init__(self) -> None:
        _check("mixgcf", [(self.n_candidates >= 1, "n_candidates must be >= 1"),
                          (self.query in ("pooled", "layer"), "query must be pooled or layer"),
                          (self.reg in ("mixed", "winner"), "reg must be mixed or winner")])


@dataclass
class DENSParams:
    """DENS (Lai et al. WSDM 2023): user-conditioned gates split items into relevant/irrelevant factors;
    the negative is the candidate best on the factor opposite to the positive's relevant one."""

    n_candidates: int = 6  # M; the reference code's default --n_negs
    warmup: float = 100.0  # epochs over which selection moves from irrelevant-factor to (negated) relevant-factor
    gamma: float = 0.3  # weight of the four factor-separation terms (reference code default)
    gate_lr: float = 0.0  # Adam lr of the gates; 0 = the run's learning.rate (the reference trains them together)
    # per_layer (Riwei-HEU/DENS DENS/modules/LightGCN.py, dise_negative_sampling and create_bpr_loss): gate and
    # select per LightGCN layer with the user's layer-l embedding (the negative's layers may come from different
    # candidates), pool the per-layer factors for the loss terms; off: gate and select on the final embeddings
    # (one real item; this repository's rule before the fidelity check)
    per_layer: bool = True

    def __post_init__(self) -> None:
        _check("dens", [(self.n_candidates >= 1, "n_candidates must be >= 1"), (self.warmup > 0, "warmup must be > 0"),
                        (self.gamma >= 0, "gamma must be >= 0"), (self.gate_lr >= 0, "gate_lr must be >= 0")])


@dataclass
class AHNSParams:
    """AHNS (Lai et al. AAAI 2024): the candidate whose score is closest to beta * (s_ui + alpha)^(p + 1)."""

    n_candidates: int = 32  # M; the reference code's default --n_negs
    alpha: float = 1.0  # reference code default
    beta: float = 0.1  # reference code default
    p: int = -2  # reference code default (p < 0: the harder the positive, the softer the negative)

    def __post_init__(self) -> None:
        _check("ahns", [(self.n_candidates >= 1, "n_candidates must be >= 1"), (self.p < 0, "p must be < 0")])


@dataclass
class ADARParams:
    """ADAR (Li et al., arXiv 2601.01448), a reconstruction: the positive is noised until its expected
    score falls to the user's negative level (the transition point t*) and a negative is generated there.
    Every default below is ours (the paper's formulas are not public); see docs/adar.md."""

    standardize: bool = True  # diffuse z0 = e_i / sigma_e (sigma_e: detached std of the batch's item vectors)
    schedule: str = "cosine"  # cosine (reaches alpha_bar_T ~ 0) | linear (DDPM's 1e-4..0.02)
    steps: int = 50  # T
    hidden: int = 256  # noise-prediction MLP [z_t; W PE(t); e_u] -> hidden -> SiLU -> hidden -> SiLU -> d
    time_emb: int = 64  # size of the sinusoidal PE(t)
    denoiser_lr: float = 1e-3  # Adam learning rate of the denoiser (its own parameter group)
    n_ref: int = 4  # random negatives whose mean score is the user's negative level s_neg
    r_min: float = 0.05  # r = clip(target / s_ui, r_min, r_max)
    r_max: float = 0.95
    t_min: int = 1  # t* when the pair is not yet separated (s_ui <= s_neg)
    t_max: int = 0  # t* when s_neg <= 0 < s_ui; 0 = T
    kappa: float = 0.0  # hardness offset: target level s_neg + kappa (s_ui - s_neg)
    timestep: str = "adaptive"  # adaptive (t* per pair) | fixed (fixed_t for every pair)
    fixed_t: int = 25  # the timestep of `fixed` (T/2 by default)
    gen_mode: str = "reverse"  # reverse (deterministic DDIM steps back to 0) | onestep (x0 estimate) | forward (z_t*)
    reverse_stride: int = 5  # reverse mode: DDIM jumps of this many steps (t*, t*-5, ..., 0)
    loss_mode: str = "augment"  # augment: BPR(u,i,j) + lambda_g BPR(u,i,gen) | replace: BPR(u,i,gen) only
    lambda_g: float = 1.0
    warmup_epochs: int = 5  # epochs of plain BPR (the denoiser already trains) before generating
    scan: bool = False  # also find t by scanning generated scores over a grid; log the agreement (validation)
    scan_points: int = 10  # grid size of the scan

    def __post_init__(self) -> None:
        t_max = self.t_max or self.steps
        _check("adar", [
            (self.schedule in ("cosine", "linear"), "schedule must be cosine or linear"),
            (self.steps >= 2, "steps must be >= 2"),
            (self.hidden >= 1 and self.time_emb >= 2 and self.time_emb % 2 == 0, "hidden >= 1, time_emb even"),
            (self.n_ref >= 1, "n_ref must be >= 1"),
            (0 < self.r_min <= self.r_max < 1, "need 0 < r_min <= r_max < 1"),
            (1 <= self.t_min <= t_max <= self.steps, "need 1 <= t_min <= t_max <= steps"),
            (self.timestep in ("adaptive", "fixed"), "timestep must be adaptive or fixed"),
            (1 <= self.fixed_t <= self.steps, "need 1 <= fixed_t <= steps"),
            (self.gen_mode in ("reverse", "onestep", "forward"), "gen_mode must be reverse, onestep or forward"),
            (self.reverse_stride >= 1, "reverse_stride must be >= 1"),
            (self.loss_mode in ("augment", "replace"), "loss_mode must be augment or replace"),
            (self.lambda_g >= 0 and self.warmup_epochs >= 0, "lambda_g and warmup_epochs must be >= 0"),
            (2 <= self.scan_points <= self.steps, "need 2 <= scan_points <= steps"),
        ])


# The two CNSDiff presets (docs/cnsdiff.md, "Presets"). A switch left as None takes its preset's value.
CNSDIFF_PRESETS: dict[str, dict[str, object]] = {
    # what the authors' released code does
    "official": {"train_denoiser": False, "user_condition": False, "denoise_from_start": False,
                 "dropout_at_generation": True, "selection": "test_all4"},
    # what the paper describes
    "paper": {"train_denoiser": True, "user_condition": True, "denoise_from_start": True,
              "dropout_at_generation": False, "selection": "valid"},
}
CNSDIFF_SWITCHES = ("train_denoiser", "user_condition", "denoise_from_start", "dropout_at_generation", "selection")


@dataclass
class CNSDiffParams:
    """CNSDiff (Zhao et al. 2025): diffusion-synthesised, curriculum-mixed negatives with a causal regulariser.
    Defaults are the released code's (docs/cnsdiff.md, "Released code vs paper"; listed in docs/samplers.md)."""

    preset: str = "official"  # official | paper
    # the five switches (None = the preset's value)
    train_denoiser: Optional[bool] = None  # step a separate Adam on the denoiser every batch
    user_condition: Optional[bool] = None  # denoiser also takes the (detached) user embedding
    denoise_from_start: Optional[bool] = None  # reverse chain from the start step s, not all T steps
    dropout_at_generation: Optional[bool] = None  # keep denoiser dropout on while generating candidates
    selection: Optional[str] = None  # model selection when the run's `selection` is auto: test_all4 | valid
    # diffusion process
    steps: int = 20  # T
    schedule: str = "linear-var"  # linear-var | linear
    noise_scale: float = 0.1
    noise_min: float = 1e-4
    noise_max: float = 0.02
    max_beta: float = 0.999
    reweight: bool = True  # weight the MSE by SNR_{t-1} - SNR_t
    # denoiser
    hidden: int = 64
    time_emb: int = 64
    norm_input: bool = True
    dropout: float = 0.5
    denoiser_lr: float = 0.01  # Adam learning rate of the denoiser when train_denoiser is on
    # candidate generation: start steps range(sample_start, num_steps + 1, stride)
    sample_start: int = 10
    stride: int = 4
    num_steps: int = 20
    # curriculum: r ~ Beta(alpha, beta), alpha and beta move linearly over the epochs
    mix_alpha_start: float = 1.0
    mix_alpha_end: float = 9.0
    mix_beta_start: float = 9.0
    mix_beta_end: float = 1.0
    min_mix_ratio: float = 0.0
    # losses
    cl_weight: float = 0.3
    temperature: float = 2.0
    positive_noise: float = 0.01
    diffusion_loss_weight: float = 1e-6
    causal_weight: float = 0.1
    # negatives per positive a loss other than BPR trains on (loss.name softmax, bsl, psl): CNSDiff's negative and
    # n_negs - 1 uniform ones (docs/losses.md); BPR, the released code's loss, takes CNSDiff's one (n_negs 1)
    n_negs: int = 1
    # ablations (with cl_weight 0 and causal_weight 0 these give the "w/o" rows)
    negative_source: str = "diffusion"  # diffusion | random (the random negative in place of the synthetic one)
    curriculum: str = "beta"  # beta (the Beta schedule above) | fixed (mix ratio fixed_ratio throughout)
    fixed_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.preset not in CNSDIFF_PRESETS:
            raise ValueError(f"params.cnsdiff.preset: {self.preset!r} is not one of {', '.join(CNSDIFF_PRESETS)}")
        for name in CNSDIFF_SWITCHES:
            if getattr(self, name) is None:
                setattr(self, name, CNSDIFF_PRESETS[self.preset][name])
        checks = [
            (self.selection in ("test_all4", "valid"), "selection must be test_all4 or valid"),
            (self.schedule in ("linear-var", "linear"), "schedule must be linear-var or linear"),
            (self.steps >= 1, "steps must be >= 1"),
            (1 <= self.sample_start <= self.num_steps <= self.steps, "need 1 <= sample_start <= num_steps <= steps"),
            (self.stride >= 1, "stride must be >= 1"),
            (0 < self.noise_min <= self.noise_max and self.noise_scale > 0, "need 0 < noise_min <= noise_max, noise_scale > 0"),
            (self.noise_scale * self.noise_max < 1, "noise_scale * noise_max must be < 1"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.temperature > 0, "temperature must be > 0"),
            (min(self.mix_alpha_start, self.mix_alpha_end, self.mix_beta_start, self.mix_beta_end) > 0,
             "Beta parameters must be > 0"),
            (0 <= self.min_mix_ratio <= 1, "min_mix_ratio must be in [0, 1]"),
            (self.negative_source in ("diffusion", "random"), "negative_source must be diffusion or random"),
            (self.curriculum in ("beta", "fixed"), "curriculum must be beta or fixed"),
            (0 <= self.fixed_ratio <= 1, "fixed_ratio must be in [0, 1]"),
            (self.n_negs >= 1, "n_negs must be >= 1"),
            (self.hidden >= 1 and self.time_emb >= 2 and self.time_emb % 2 == 0, "hidden >= 1, time_emb even"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"params.cnsdiff: {message}")

    def start_steps(self) -> list[int]:
        """The start steps s of the candidate chains."""
        return list(range(self.sample_start, self.num_steps + 1, self.stride))


# ---- loss functions (loss.name; bpr, the default, has no settings) -------------------------------------------------
# The softmax family of the PSL paper's benchmark (Tiny-Snow/IR-Benchmark, src/itemrec/optimizer/): every loss scores
# with f(u, i) = cos(u, i) / 2 (the PSL paper's section 2), and every temperature is on that scale, as its Table B.3
# prints them (the code multiplies cos by 1/tau_code with tau_code = 2 tau; PSL's by 1/(2 tau*)). The defaults are
# Table B.3's (MF, popularity-shift splits, Amazon-CD; Amazon-Electronic differs only in BSL's tau1, 0.1). The N
# negatives come from the sampler (params.rns.n_negs; the references draw 1000 per positive, rejecting the user's
# training items, docs/losses.md).


@dataclass
class SoftmaxParams:
    """SL, sampled softmax: mean over rows of logsumexp_j((f_j - f_i) / tau) over the row's N negatives (optim_Softmax.py)."""

    tau: float = 0.05  # Table B.3, CD and Electronic

    def __post_init__(self) -> None:
        _check("softmax", [(self.tau > 0, "tau must be > 0")])


@dataclass
class BSLParams:
    """BSL (Wu et al., ICDE 2024): -f_i / tau1 + (tau2 / tau1) logsumexp_j(f_j / tau2) (optim_BSL.py)."""

    tau1: float = 0.05  # the positive term's temperature; Table B.3: 0.05 on CD, 0.1 on Electronic
    tau2: float = 0.05  # the negative term's temperature; Table B.3: 0.05 on both

    def __post_init__(self) -> None:
        _check("bsl", [(self.tau1 > 0 and self.tau2 > 0, "tau1 and tau2 must be > 0")])


PSL_ACTIVATIONS = ("tanh", "atan", "relu", "exp")


@dataclass
class PSLParams:
    """PSL (Yang et al., NeurIPS 2024): logsumexp_j(log sigma(f_j - f_i) / tau), sigma a surrogate of exp (optim_PSL.py)."""

    activation: str = "tanh"  # tanh: tanh(d) + 1 | atan: atan(d) + 1 | relu: relu(d + 1) | exp: exp(d) (= SL)
    tau: float = 0.05  # tau* of the code; Table B.3, every surrogate, CD and Electronic

    def __post_init__(self) -> None:
        _check("psl", [(self.activation in PSL_ACTIVATIONS, f"activation must be one of {', '.join(PSL_ACTIVATIONS)}"),
                       (self.tau > 0, "tau must be > 0")])


@dataclass
class AdvInfoNCEParams:
    """AdvInfoNCE (Zhang et al., NeurIPS 2023): InfoNCE whose negatives are weighted by an adversary's hardness
    N softmax_j(cos(a_u, a_j)), a_* rows of its own tables, trained to raise the loss (optim_AdvInfoNCE.py)."""

    tau: float = 0.05  # Table B.3, CD and Electronic
    neg_weight: float = 64.0  # K: -log e^{s_i} / (e^{s_i} + K sum_j w_j e^{s_j}); the paper's B.5.1 and run_nni.py
    adv_lr: float = 5e-5  # Adam lr of the adversary tables (maximising the loss); run_nni.py
    adv_every: int = 5  # every adv_every-th epoch (5, 10, ...) trains only the adversary, the others only the model
    adv_dim: int = 0  # the adversary tables' width; 0 = embedding.size (the reference's emb_size)

    def __post_init__(self) -> None:
        _check("advinfonce", [(self.tau > 0, "tau must be > 0"), (self.neg_weight > 0, "neg_weight must be > 0"),
                              (self.adv_lr > 0, "adv_lr must be > 0"),
                              (self.adv_every >= 2, "adv_every must be >= 2 (1 would never train the model)"),
                              (self.adv_dim >= 0, "adv_dim must be >= 0 (0: embedding.size)")])


# loss.name -> its settings class (the loss registry, module/losses/__init__.py, maps the same names to the classes;
# bpr has none). Set as params.LOSS.FIELD, e.g. --set params.softmax.tau=0.1.
LOSS_PARAMS: dict[str, type] = {
    "softmax": SoftmaxParams, "bsl": BSLParams, "psl": PSLParams, "advinfonce": AdvInfoNCEParams,
}


# negative.sampler name -> its settings class: what config resolution needs of a sampler (the sampler
# registry, module/samplers/__init__.py, maps the same names to their classes, in the same order). Adding a
# sampler: the recipe in docs/samplers.md ("Adding a sampler"); module.samplers.check_registration() names a
# missing step.
PARAMS: dict[str, type] = {
    "rns": RNSParams, "pns": PNSParams, "dns": DNSParams, "dns_mn": DNSMNParams, "mixgcf": MixGCFParams,
    "dens": DENSParams, "ahns": AHNSParams, "adar": ADARParams, "cnsdiff": CNSDiffParams,
}
if set(PARAMS) & set(LOSS_PARAMS):  # params.NAME.FIELD must name one owner
    raise TypeError(f"conf/params.py: {sorted(set(PARAMS) & set(LOSS_PARAMS))} name both a sampler and a loss")

"""Statistics over seeds: mean and sample std per metric, the paired t-interval of a difference (variant
and baseline share each seed: same data order, same schedule), and a difference's interval split into its
training and validation parts (the training part from :mod:`.noise`'s model)."""
import math
from typing import Dict, Optional, Sequence

__all__ = ["mean_std", "summarize", "paired_difference", "t_quantile_975", "CI_METHOD", "decompose_interval",
           "seeds_for_half_width", "DECOMPOSITION_METHOD", "chi2_cdf"]

CI_METHOD = ("paired t-interval over seeds: per-seed differences d = variant - baseline (same seed), "
             "mean(d) +- t(0.975, n-1) * sd(d) / sqrt(n), sd with n-1 in the denominator; needs n >= 2")

# Student t 0.975 quantiles for 1..30 degrees of freedom (3 decimals, as printed in t tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (two-sided 95%).

    A t table for df <= 30 and, above, the Cornish-Fisher expansion around the normal quantile
    (error below 1e-5 there): the same numbers on every machine, whether or not scipy is installed.
    """
    if df < 1:
        raise ValueError(f"df={df}: a t quantile needs at least 1 degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def _t_half_width(sd: float, n: int) -> float:
    """The half-width of the 95% t-interval of a mean of ``n`` values with sample std ``sd``; nan for n < 2."""
    return t_quantile_975(n - 1) * sd / math.sqrt(n) if n > 1 else math.nan


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """``{"mean", "std", "n"}``; std is the sample std (n-1), nan for fewer than two values."""
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n}


def summarize(per_seed: Dict[int, Dict[str, float]], metrics: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Per metric, mean and std over the seeds of one variant (``per_seed``: seed -> metrics)."""
    return {m: mean_std([r[m] for r in per_seed.values() if not math.isnan(r.get(m, math.nan))]) for m in metrics}


def paired_difference(variant: Dict[int, float], baseline: Dict[int, float]) -> Optional[Dict]:
    """The paired 95% t-interval of ``variant - baseline`` over the seeds both have.

    Returns:
        ``{"mean", "ci_low", "ci_high", "n", "per_seed"}`` (interval ends nan when n < 2), or None
        when no seed is shared.
    """
    per_seed = {s: variant[s] - baseline[s] for s in sorted(set(variant) & set(baseline))}
    stats = mean_std([d for d in per_seed.values() if not math.isnan(d)])
    if not stats["n"]:
        return None
    half = _t_half_width(stats["std"], stats["n"])
    return {"mean": stats["mean"], "ci_low": stats["mean"] - half, "ci_high": stats["mean"] + half,
            "n": stats["n"], "per_seed": per_seed}


DECOMPOSITION_METHOD = (
    "training part: the half-width of the noise model's interval of the difference (run noise, and the "
    "setup-by-variant part where runs were made on several setups; see noise.NOISE_METHOD); validation part: "
    "1.96 x the bootstrap std of the seed-mean difference over validation images; total half-width: "
    "sqrt(training^2 + validation^2) around the noise model's mean (conservative: each part's estimate holds a "
    "little of the other). Seeds for a target half-width h on one setup: the smallest n >= 2 with "
    "t(0.975, n-1) * run sd / sqrt(n) <= sqrt(h^2 - validation^2), taking the run sd and the validation part as "
    "measured; validation images for the validation part to be h / sqrt(2): images x (validation part / "
    "(h / sqrt(2)))^2 (the bootstrap std falls as 1 / sqrt(images))")


def seeds_for_half_width(seed_sd: float, validation_half: float, target: float, limit: int = 10_000) -> Optional[int]:
    """The smallest number of seeds whose total half-width is at most ``target``, or None if none up to
    ``limit`` (e.g. the validation part alone is wider than ``target``)."""
    if math.isnan(seed_sd) or math.isnan(validation_half) or validation_half >= target:
        return None
    room = math.sqrt(target ** 2 - validation_half ** 2)
    return next((n for n in range(2, limit + 1) if _t_half_width(seed_sd, n) <= room), None)


def decompose_interval(noise: Optional[Dict], bootstrap_of_mean: Optional[Dict], num_images: int,
                       targets: Sequence[float] = (1.0, 0.5)) -> Optional[Dict]:
    """How wide a paired difference's interval is, from training (runs, setups) and from the validation sample.

    Args:
        noise: the difference's :func:`.noise.noise_model`; bootstrap_of_mean: the paired bootstrap of the
            seed-mean difference (``{"std", ...}``); num_images: the validation images.

    Returns:
        ``{"mean", "runs", "seed_sd", "setup_sd", "training_half", "validation_half", "total_half", "total_low",
        "total_high", "needed": {target: {"seeds", "seeds_with_more_images", "images"}}}`` (``setup_sd`` None
        with one setup; ``needed`` counts seeds on one setup and images), None without both inputs.
    """
    if not noise or not bootstrap_of_mean:
        return None
    seed_sd, training, mean = noise["run_sd"], noise["half"], noise["mean"]
    validation = _Z975 * bootstrap_of_mean["std"]
    total = math.sqrt(training ** 2 + validation ** 2)
    measured, needed = not math.isnan(validation), {}
    for h in targets:
        share = h / math.sqrt(2)  # the validation part's target
        needed[str(h)] = {"seeds": seeds_for_half_width(seed_sd, validation, h),
                          "images": int(math.ceil(num_images * (validation / share) ** 2)) if measured else None,
                          "seeds_with_more_images": seeds_for_half_width(seed_sd, min(validation, share), h)
                          if measured else None}
    return {"mean": mean, "runs": noise["runs"], "seed_sd": seed_sd, "setup_sd": noise["setup_sd"],
            "training_half": training, "validation_half": validation, "total_half": total,
            "total_low": mean - total, "total_high": mean + total, "needed": needed}


def chi2_cdf(x: float, dof: int) -> float:
    """P(X <= x) for X chi-squared with ``dof`` degrees of freedom (the regularized lower incomplete gamma
    P(dof/2, x/2) by its power series): how likely a sample variance as small as one seen is."""
    if x <= 0:
        return 0.0
    a, h = dof / 2, x / 2
    term = total = 1.0 / a
    n = 0
    while term > 1e-15 * total:
        n += 1
        term *= h / (a + n)
        total += term
    return math.exp(a * math.log(h) - h - math.lgamma(a)) * total

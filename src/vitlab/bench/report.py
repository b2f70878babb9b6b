"""``run_bench``'s result as Markdown: a heading, the model, machine and settings, a table and notes."""

from __future__ import annotations

from typing import Any

from ..flops import format_macs
from .timing import PHASES

PHASE_LABELS = {"train": "train step (fwd, CE, bwd, AdamW)", "inference": "inference (eval, no_grad)"}


def _ms(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def format_markdown(r: dict[str, Any]) -> str:
    """``run_bench``'s result as a Markdown heading, settings, a table and notes."""
    ref = r["reference"]
    h, w = r["img_size"]
    shape = f"{r['in_chans']}x{h}x{w}"
    mfu = r["peak_tflops"] is not None
    lines = [f"### vitlab bench: {r['model']}" + (f" vs {ref}" if ref else " (no reference implementation)"), "",
             f"- model: {r['model']}, {r['params']:,} parameters, {format_macs(r['macs_per_image'])} per image "
             f"at {shape}; " + (f"reference: {ref} {r[ref]} `{r['reference_model']}`, same weights" if ref else
                                f"no {r['family']} model in timm or torchvision to compare with: vitlab alone"),
             f"- machine: {r['device']}: {r['device_name']}; torch {r['torch']}, python {r['python']}, "
             f"{r['threads']} CPU thread{'s' if r['threads'] != 1 else ''}",
             f"- run: batch {r['batch']}, image {shape}, amp {r['amp']}, "
             f"{'torch.compile' if r['compile'] else 'eager'}, {r['rounds']} round{'s' if r['rounds'] != 1 else ''}"
             + (" (the two models alternating within each round)" if ref else "")
             + ", calls per timing: " + ", ".join(f"{p} {r['iters'][p]}" for p in PHASES), ""]
    libs = ["vitlab"] + ([ref] if ref else [])
    head = ["phase"]
    for lib in libs:
        head += [f"{lib} ms", f"{lib} images/s"] + ([f"{lib} MFU"] if mfu else [])
    if ref:
        head += [f"{ref}/vitlab", "paired"]
    lines += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for phase in PHASES:
        p = r["phases"][phase]
        row = [PHASE_LABELS[phase]]
        for key in ["vitlab"] + (["reference"] if ref else []):
            s = p[key]
            row += [_ms(s["median_ms"]), _rate(s["images_per_s"])] + ([f"{100 * s['mfu']:.1f}%"] if mfu else [])
        if ref:
            row += [f"{p['ratio']:.3f}", f"{p['paired_ratio']:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "- ms: median over the rounds of one batch; images/s: batch / median."]
    if ref:
        lines += [f"- {ref}/vitlab: ratio of the medians; paired: median over the rounds of the ratio of the two "
                  f"back-to-back timings (steadier on a busy machine). >= 1.0: vitlab is not slower.",
                  f"- same weights: max |logit difference| {r['max_abs_logit_diff']:.2e} (max |logit| "
                  f"{r['max_abs_logit']:.3g}; fp32, allowed {r['tolerance']:g} x max(1, max |logit|))."]
    lines.append(f"- {r['mfu_note']}.")
    return "\n".join(lines)

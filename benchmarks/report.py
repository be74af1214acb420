"""The benchmark's targets and its markdown summary."""

from __future__ import annotations

TARGETS = {
    "fraction_of_peak": 0.60,
    "vs_captum_tutorial": 3.0,
    "vs_captum_best": 1.5,
    "stage_two_vs_plain": 2.2,
    "gpu_kd_sentences_per_s": 20_000,
    "perturbation_vs_online": 0.25,
    "scaling_2_workers": 1.7,
}


def _check(name: str, value: float, target: float, higher_is_better: bool) -> dict:
    met = value >= target if higher_is_better else value <= target
    return {"name": name, "value": value, "target": target, "op": ">=" if higher_is_better else "<=", "met": met}


def targets(results: dict) -> list[dict]:
    checks = []
    one = results.get("stage_one", {})
    for case in ("input_x_gradient", "integrated_gradients", "occlusion"):
        if case in one:
            checks.append(
                _check(
                    f"stage one {case}: fraction of matmul peak",
                    one[case]["egkd"]["fraction_of_peak"],
                    TARGETS["fraction_of_peak"],
                    True,
                )
            )
    for case in ("input_x_gradient", "integrated_gradients", "occlusion"):
        entry = one.get(case, {})
        if "captum_tutorial" in entry:
            checks.append(
                _check(
                    f"stage one {case}: speed-up vs captum (tutorial)",
                    entry["captum_tutorial"]["egkd_speedup"],
                    TARGETS["vs_captum_tutorial"],
                    True,
                )
            )
            checks.append(
                _check(
                    f"stage one {case}: speed-up vs captum (best options)",
                    entry["captum_best"]["egkd_speedup"],
                    TARGETS["vs_captum_best"],
                    True,
                )
            )
    two = results.get("stage_two")
    if two:
        for method in ("gradient", "perturbation", "feature_selection"):
            checks.append(
                _check(
                    f"stage two {method}: step time / plain step",
                    two[method]["vs_plain"],
                    TARGETS["stage_two_vs_plain"],
                    False,
                )
            )
        checks.append(
            _check(
                "stage two perturbation: cached / online step",
                two["perturbation"]["vs_online"],
                TARGETS["perturbation_vs_online"],
                False,
            )
        )
        if str(two.get("device", "cpu")).startswith("cuda"):
            checks.append(
                _check(
                    "stage two on the GPU: vanilla-KD student sentences/s",
                    two["kd"]["sentences_per_s"],
                    TARGETS["gpu_kd_sentences_per_s"],
                    True,
                )
            )
    if results.get("scaling"):
        checks.append(
            _check(
                "stage one: 2 workers / 1 worker throughput",
                results["scaling"]["ratio"],
                TARGETS["scaling_2_workers"],
                True,
            )
        )
    return checks


def _g(value: float) -> str:
    return f"{value / 1e9:.1f}"


def markdown(results: dict) -> str:
    info, peak = results["machine"], results["matmul_peak"]
    lines = [
        f"# egkd benchmark: {info['hostname']} ({results['mode']} run)",
        "",
        f"- {info['cpus']} CPUs, torch {info['torch']}, {peak['threads']} torch threads; load average "
        f"(1/5/15 min) at start {info['load_avg_1_5_15']}, at end {info.get('load_avg_at_end')}",
        f"- teacher `{results['teacher']}`, data {results['data']}; wall time {results.get('wall_s')} s",
        f"- fp32 matmul peak: **{_g(peak['flops_per_s'])} GFLOP/s** "
        f"(the larger of the peak before stage one, {_g(peak.get('before_stage_one', peak['flops_per_s']))}, "
        f"and after it, {_g(peak.get('after_stage_one', peak['flops_per_s']))}; sizes 1024-2048, best of "
        f"several runs each)",
        "",
        "## Stage one (explain), per method",
        "",
        "| method | run | examples | ex/s | input tok/s | model tok/s | GFLOP/s | % of peak | egkd speed-up "
        "| max abs diff vs egkd | allclose | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for case, entry in results["stage_one"].items():
        for run in ("egkd", "captum_tutorial", "captum_best"):
            if run not in entry:
                continue
            r = entry[run]
            agree = r.get("agreement")
            label = {
                "egkd": f"egkd (batch {r.get('batch_size')})",
                "captum_tutorial": "captum, tutorial",
                "captum_best": "captum, best options",
            }[run]
            speedup = "" if run == "egkd" else "{:.2f}x".format(r["egkd_speedup"])
            diff = "" if not agree else "{:.1e}".format(agree["max_abs_diff"])
            close = "" if not agree else ("yes" if agree["allclose"] else "no")
            lines.append(
                f"| {case} | {label} | {r['examples']} | {r['ex_per_s']:.2f} | {r['input_tokens_per_s']:.0f} "
                f"| {r['model_tokens_per_s']:.0f} | {_g(r['flops_per_s'])} | {r['fraction_of_peak']:.0%} "
                f"| {speedup} | {diff} | {close} | {r['peak_rss_mib']:.0f} |"
            )
    two = results.get("stage_two")
    if two:
        from benchmarks.stage_two import table

        lines += ["", *table(two)]
    scaling = results.get("scaling")
    if scaling:
        lines += [
            "",
            f"## Stage one scaling over dask workers ({scaling['method']}; {scaling['timing']})",
            "",
            "| workers | threads | examples | parts | run s | ex/s | cluster start s | teacher load s "
            "| ex/s incl. start-up | worker peak RSS MiB |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in scaling["runs"]:
            lines.append(
                f"| {r['workers']} | {r['threads_per_worker']} | {r['examples']} | {r['parts']} "
                f"| {r['run_s']:.1f} | {r['ex_per_s']:.2f} | {r['cluster_start_s']:.1f} "
                f"| {r['teacher_load_s']:.1f} | {r['ex_per_s_with_startup']:.2f} "
                f"| {r['worker_peak_rss_mib']} |"
            )
        lines.append(
            f"\nRatio 2/1 workers: **{scaling['ratio']:.2f}x** (with start-up and load: "
            f"{scaling['ratio_with_startup']:.2f}x)."
        )
    lines += ["", "## Targets", "", "| target | value | goal | met |", "|---|---:|---:|---|"]
    for check in results["targets"]:
        value = check["value"]
        shown = f"{value:.0%}" if "fraction" in check["name"] else f"{value:.2f}"
        goal = f"{check['target']:.0%}" if "fraction" in check["name"] else f"{check['target']}"
        lines.append(f"| {check['name']} | {shown} | {check['op']} {goal} | {'yes' if check['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"

"""`qrpo-plan [--multirun] [OVERRIDES]`: what a run or a sweep will cost, before launching it.

    qrpo-plan                                              # the embedded default on this machine kind (plan.gpu=cpu)
    qrpo-plan model=pretrained model.path=meta-llama/Llama-3.1-8B-Instruct reward=armorm plan.gpu=h100 plan.num_gpus=32
    qrpo-plan --multirun sweep=paper_qrpo plan.gpu=h100 plan.num_gpus=32     # a sweep: each job, and what reuse saves
    qrpo-plan experiment=compare                           # the arms of a comparison, as one sweep

The same overrides as `qrpo-pipeline` (the same Hydra composition, flows/config.py), plus the `plan` group
(conf/plan/default.yaml: the cluster and the assumptions). A `--multirun` sweep is expanded as Hydra's
BasicSweeper expands it (command-line sweeps and a `sweep=` preset's hydra.sweeper.params). Nothing is loaded,
sampled or written: the plan reads the config, the data's size and the models' sizes (qrpo/plan/). Bad input:
one line on stderr, exit status 2.
"""

from __future__ import annotations

import sys

from qrpo.errors import InputError

def _parsed(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise InputError(" ".join(str(err).split()).split(" See https://")[0]) from None


def sweeper_params(overrides: list[str]) -> dict[str, str]:
    """`hydra.sweeper.params` of the composed config (a `sweep=` preset's grid), as --multirun reads it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from flows.config import CONFIG_DIR, CONFIG_NAME

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        message = " ".join(str(err).split()).split(" Config search path")[0]
        raise InputError(f"bad config override in {list(overrides)}: {message}") from None
    params = cfg.hydra.sweeper.get("params")
    return {str(k): str(v) for k, v in OmegaConf.to_container(params, resolve=False).items()} if params else {}


def with_plan(overrides: list[str]) -> list[str]:
    """The overrides with the plan group selected (conf/config.yaml leaves it out of every pipeline run)."""
    chosen = any(o.lstrip("+~").split("=", 1)[0] == "plan" for o in overrides)
    return list(overrides) if chosen else ["plan=default", *overrides]


def expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every job's overrides: one run, a --multirun grid (Hydra's BasicSweeper order), or a comparison's arms."""
    from flows.config import compose_config
    from flows.sweep import configured_arms, sweep_jobs

    overrides = with_plan(overrides)
    parsed = _parsed(overrides)
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        raise InputError(f"{sweeps[0]} is a sweep: add --multirun (-m) to plan every job, or quote it as one value")
    if multirun:
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        params = sweeper_params(fixed)
        try:
            return sweep_jobs(overrides, params)
        except Exception as err:  # Hydra's own grammar errors inside a preset's params
            raise InputError(f"cannot expand the sweep {params or sweeps}: {' '.join(str(err).split())}") from None
    arms = configured_arms(compose_config(overrides))  # experiment=compare: its arms run as children of one parent
    if arms:
        return [[*overrides, *arm, f"run_name={name}"] for name, arm in arms.items()]
    return [overrides]


def _label(job: list[str], common: set[str]) -> str:
    return " ".join(o for o in job if o not in common and not o.lstrip("+~").startswith("plan"))


def build(overrides: list[str], multirun: bool = False):
    """The plan (qrpo.plan.SweepPlan) of these overrides: compose and type every job, then price it."""
    from flows.config import compose_config
    from qrpo.config.sections import PlanConfig, build_section, typed_sections
    from qrpo.plan import plan_jobs

    jobs = expand(overrides, multirun)
    common = set.intersection(*(set(job) for job in jobs)) if len(jobs) > 1 else set()
    planned = []
    for job in jobs:
        config = compose_config(job)
        sections = typed_sections(config)
        plan = build_section(PlanConfig, config.get("plan"))
        label = _label(job, common) if len(jobs) > 1 else f"{sections.model.name}, {sections.dataset.name}, reward {sections.reward.name}"
        planned.append((config, sections, plan, label))
    return plan_jobs(planned)


def main(argv: list[str] | None = None) -> None:
    """Print the plan; bad input: one line on stderr, exit status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return
    multirun = any(a in ("-m", "--multirun") for a in args)
    args = [a for a in args if a not in ("-m", "--multirun")]
    try:
        flags = [a for a in args if a.startswith("-")]
        if flags:
            raise InputError(f"unknown option {flags[0]}; qrpo-plan takes --multirun (-m), --help and Hydra overrides")
        from qrpo.plan import format_plan

        text = format_plan(build(args, multirun))
    except InputError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    print(text)


if __name__ == "__main__":
    main()

"""qrpo-plan's arithmetic on a hand-worked example: experiment=smoke's tiny models, whose parameters, tokens and
FLOPs are counted here by hand, not by the code under test; then the price of each step on a table device."""

import pytest

from flows.config import compose_config
from qrpo.config.sections import PlanConfig, build_section, typed_sections
from qrpo.errors import InputError
from qrpo.plan import plan_jobs, price
from qrpo.plan.cost import job_plan

# conf/model/tiny.yaml: hidden 64, MLP 128, 2 layers, 4 heads (head_dim 16), 2 key/value heads; byte-level vocab 384, untied
EMBED = 384 * 64
LAYER = 64 * 64 + 2 * (64 * 2 * 16) + 64 * 64 + 3 * 64 * 128 + 2 * 64  # q, k and v, o, gate/up/down, two norms
POLICY_PARAMS = EMBED + 2 * LAYER + 64 + 384 * 64  # + final norm + LM head
POLICY_N = POLICY_PARAMS - EMBED  # the input embedding is a lookup, not a product
# conf/reward/tiny_classifier.yaml: hidden 32, MLP 64, 1 layer, 2 heads (head_dim 16), 1 key/value head, score head 32 x 1
REWARD_EMBED = 384 * 32
REWARD_PARAMS = REWARD_EMBED + (32 * 32 + 2 * (32 * 16) + 32 * 32 + 3 * 32 * 64 + 2 * 32) + 32 + 32
REWARD_N = REWARD_PARAMS - REWARD_EMBED
TEMPLATE = len("<|user|>\n<|assistant|>")  # the tiny chat template around one user turn, one token per byte

# the example: 16 train and 8 eval prompts of 30 tokens (set, so that no data is read), fp32
P, E, LP = 16, 8, 30
SMOKE = ["experiment=smoke", "plan=default", f"plan.train_prompts={P}", f"plan.eval_prompts={E}", f"plan.prompt_tokens={LP}",
         "plan.precision=fp32"]
K, M, LC, LE = 3, 4, 16, 16  # conf/experiment/smoke.yaml: K = 3, M = 4, 16 new tokens (train and eval)
EVAL_REF, EVAL_POLICY = 4, 2  # reference and policy samples per eval prompt, one seed


def plan_of(*extra):
    config = compose_config([*SMOKE, *extra])
    sections = typed_sections(config)
    return job_plan(config, sections, build_section(PlanConfig, config["plan"]))


def test_hand_counted_sizes():
    job = plan_of()
    assert (job.policy.params, job.policy.flop_params) == (POLICY_PARAMS, POLICY_N) == (123_200, 98_624)
    assert (job.reward.params, job.reward.flop_params) == (REWARD_PARAMS, REWARD_N) == (21_632, 9_344)
    assert job.policy.template_tokens == job.reward.template_tokens == TEMPLATE == 22


def test_tokens_and_flops_of_every_step_by_hand():
    steps = {s.name: s for s in plan_of().steps}
    n = K + M  # QRPO, regime=auto: pointwise, every one of the K + M samples a training example (leave-one-out)
    sample = steps["sample train"]
    assert (sample.rows, sample.tokens) == (P * n, P * n * LC) == (112, 1792)
    assert sample.flops == 2 * POLICY_N * (P * n * LC + P * LP)  # each generated token, each prompt once
    ref = steps["sample eval reference"]
    assert (ref.rows, ref.tokens, ref.flops) == (E * EVAL_REF, E * EVAL_REF * LE, 2 * POLICY_N * (E * EVAL_REF * LE + E * LP))
    # the reward reads its own template + the prompt's text (30 - 22 template tokens) + the completion, per sample
    per_score = TEMPLATE + (LP - TEMPLATE) + LC
    score = steps["score train"]
    assert (score.rows, score.tokens, score.flops) == (P * n, P * n * per_score, 2 * REWARD_N * P * n * per_score)
    assert steps["score eval reference"].tokens == E * EVAL_REF * per_score
    logps = steps["reference log-probs"]
    assert (logps.rows, logps.tokens, logps.flops) == (P * n, P * n * (LP + LC), 2 * POLICY_N * P * n * (LP + LC))
    train = steps["train"]  # 1 epoch, 6N per token of prompt + completion
    assert (train.tokens, train.flops) == (P * n * (LP + LC), 6 * POLICY_N * P * n * (LP + LC)) == (5152, 3_048_665_088)
    policy = steps["sample policy (eval)"]
    assert (policy.rows, policy.flops) == (E * EVAL_POLICY, 2 * POLICY_N * (E * EVAL_POLICY * LE + E * LP))
    assert steps["score policy samples"].tokens == E * EVAL_POLICY * per_score
    eval_logps = steps["eval log-probs"]  # log pi and log pi_ref of every policy sample
    assert eval_logps.tokens == 2 * E * EVAL_POLICY * (LP + LE) and eval_logps.flops == 2 * POLICY_N * eval_logps.tokens
    assert all(s.precision == "fp32" for s in steps.values() if s.work != "none")


def test_pairs_checkpointing_and_lora_change_the_counts_as_they_should():
    steps = {s.name: s for s in plan_of("algorithm=dpo").steps}  # best_worst: one pair per prompt
    assert steps["reference log-probs"].tokens == P * 2 * (LP + LC)  # each side with its prompt
    assert steps["train"].tokens == P * (LP + 2 * LC)  # the prompt once for both sides (share_prompts)
    ckpt = {s.name: s for s in plan_of("algorithm=dpo", "train.gradient_checkpointing=true").steps}["train"]
    assert ckpt.tokens == P * (2 * LP + 2 * LC) and ckpt.flops == 8 * POLICY_N * ckpt.tokens  # no shared prompt; one more forward
    lora = {s.name: s for s in plan_of("train.lora_r=8").steps}["train"]
    assert lora.flops == 4 * POLICY_N * lora.tokens
    simpo = [s.name for s in plan_of("algorithm=simpo").steps]
    assert "reference log-probs" not in simpo and "train" in simpo  # reference-free: no reference pass
    assert {s.name: s for s in plan_of("sampler.min_samples_per_prompt=10").steps}["sample train"].rows == P * 10


def test_price_on_the_cpu_row_and_on_a_gpu_cluster():
    job = plan_of()
    step = {s.name: s for s in job.steps}["train"]
    priced = price(step, job.device)
    # cpu, fp32: 214 GFLOP/s peak, training at 93.2% of it; one fp32 policy load at 0.5 GB/s, no engine start
    compute = 6 * POLICY_N * P * (K + M) * (LP + LC) / (0.214e12 * 0.932)
    load = 4 * POLICY_PARAMS / 0.5e9
    assert priced.compute_s == pytest.approx(compute) and priced.load_s == pytest.approx(load)
    assert priced.wall_s == pytest.approx(compute + load) and priced.device_hours == pytest.approx((compute + load) / 3600)
    gpu = plan_of("plan.gpu=h100", "plan.num_gpus=4", "plan.precision=bf16")
    step = {s.name: s for s in gpu.steps}["train"]
    priced = price(step, gpu.device)
    compute = 6 * POLICY_N * P * (K + M) * (LP + LC) / (989.4e12 * 0.33)
    load = 4 * POLICY_PARAMS / 2e9 + 60.0  # + the H100 row's 60 s start
    assert step.devices == 4
    assert priced.wall_s == pytest.approx(compute / 4 + load)
    assert priced.device_hours == pytest.approx((compute + 4 * load) / 3600)
    measured = plan_of("plan.gpu=h100", "plan.tokens_per_s.train=1000")
    step = {s.name: s for s in measured.steps}["train"]
    assert price(step, measured.device).compute_s == pytest.approx(P * (K + M) * (LP + LC) / 1000)


def test_disk_of_samples_and_checkpoints():
    steps = {s.name: s for s in plan_of("train.checkpoint_every=5", "train.keep_checkpoints=3").steps}
    # 3.4 bytes per completion token + 1.4 per prompt token, per row (qrpo/plan/throughput.yaml)
    assert steps["sample train"].disk == pytest.approx(P * (K + M) * (3.4 * LC + 1.4 * LP))
    # the trained policy (fp32) is kept; 3 checkpoints of weights and AdamW moments (12 bytes a parameter) while it trains
    assert steps["train"].disk == pytest.approx(4 * POLICY_PARAMS) and steps["train"].scratch == pytest.approx(3 * 12 * POLICY_PARAMS)
    lora = {s.name: s for s in plan_of("train.checkpoint_every=5", "train.lora_r=8").steps}["train"]
    assert lora.scratch == pytest.approx(2 * 4 * POLICY_PARAMS)  # LoRA: the weights only, 2 kept (the default)


def test_plan_is_never_part_of_a_pipeline_run():
    assert "plan" not in compose_config([])
    assert compose_config(["plan=default"])["plan"]["gpu"] == "cpu"


@pytest.mark.parametrize("extra, expected", [
    (["plan.gpu=tpu"], "plan.gpu='tpu' is not in the throughput table"),
    (["plan.num_gpus=6", "plan.nodes=4"], "plan.num_gpus=6 must be a multiple of plan.nodes=4"),
    (["plan.mfu.decode=2"], "plan.mfu.decode must be in (0, 1] or null; got 2"),
    (["+plan.mfu.sampling=0.2"], "unknown key plan.mfu.sampling; valid keys: decode, prefill, train"),
    (["model=pretrained", "model.path=some-org/unknown-model"], "set plan.params"),
    (["algorithm=dpo", "regime=pointwise"], "needs preference pairs"),
])
def test_bad_plans_say_what_to_set(extra, expected):
    with pytest.raises(InputError, match=None) as err:
        config = compose_config([*SMOKE, *extra])
        plan_jobs([(config, typed_sections(config), build_section(PlanConfig, config["plan"]), "")])
    assert expected in str(err.value)

#!/usr/bin/env bash
# verl PPO/GRPO with TreePO tree rollouts (reason.rl.verl.TreeAgentLoopManager), on a GPU machine with
# verl 0.9 (pip install -e ".[verl]"; verl pins its own transformers, so give it its own environment).
#
# The manager grows one tree per prompt with rollout.n leaves through verl's rollout servers and puts
# each token's tree advantage (its segment's credit) into rm_scores; the reason_tree estimator
# (registered when the manager's module is imported) trains on them as they are. For verl's own GRPO
# over the tree's leaves instead, set tree.advantage=reward and algorithm.adv_estimator=grpo.
#
# Usage: examples/verl_treepo.sh <train.parquet> <val.parquet> [model] [more hydra overrides...]
set -euo pipefail
train=${1:?train parquet}; val=${2:?val parquet}; model=${3:-Qwen/Qwen2.5-Math-1.5B-Instruct}
shift $(( $# < 3 ? $# : 3 ))
python3 -m verl.trainer.main_ppo \
  data.train_files="$train" data.val_files="$val" \
  data.max_prompt_length=512 data.max_response_length=2048 \
  actor_rollout_ref.model.path="$model" \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.calculate_log_probs=True \
  actor_rollout_ref.rollout.agent.agent_loop_manager_class=reason.rl.verl.TreeAgentLoopManager \
  +actor_rollout_ref.rollout.agent.tree.segment_tokens=256 \
  +actor_rollout_ref.rollout.agent.tree.advantage=segment \
  algorithm.adv_estimator=reason_tree \
  "$@"

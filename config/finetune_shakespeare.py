# finetune GPT-2 XL on Shakespeare (nanoGPT's preset; needs OpenAI's GPT-2 weights and the BPE shakespeare dataset)
# nanoGPT names the wandb run 'ft-' + str(time.time()); presets here are read, never run, so the name is fixed

out_dir = 'out-shakespeare'
eval_interval = 5
eval_iters = 40
wandb_log = False # feel free to turn on
wandb_project = 'shakespeare'
wandb_run_name = 'ft-shakespeare'

dataset = 'shakespeare'
init_from = 'gpt2-xl' # this is the largest GPT-2 model

# only save checkpoints if the validation loss improves
always_save_checkpoint = False

# the number of examples per iter:
# 1 batch_size * 32 grad_accum * 1024 tokens = 32,768 tokens/iter
# shakespeare has 301,966 tokens, so 1 epoch ~= 9.2 iters
batch_size = 1
gradient_accumulation_steps = 32
max_iters = 20

# finetune at a constant LR
learning_rate = 3e-5
decay_lr = False

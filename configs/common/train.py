# Training options read by train_net.py.
train = dict(
    output_dir="./output",
    init_checkpoint="",
    # .pkl/.pth files load without running code (plain weights only); True unpickles fully:
    # only for checkpoints from a source you trust.
    allow_unsafe_pickle=False,
    max_iter=90000,
    # Mixed precision. precision: "auto" is fp16 with a grad scaler on CUDA, bf16 on a CPU with native
    # bf16 (else fp32, said in one line); "float16" (grad scaler included) or "bfloat16" on any device,
    # e.g. train.amp.precision=float16 with train.device=cpu runs the GPU recipe's fp16 numerics on a CPU.
    amp=dict(enabled=False, precision="auto"),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,  # evaluate every N iterations and after the last; 0: never (no final evaluation)
    log_period=20,
    device="cuda",
    seed=-1,  # < 0: a random seed per run
)

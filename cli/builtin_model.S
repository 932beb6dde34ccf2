/* The built-in model (models/fashion_densenet.onnx), linked into the densert binary. */
    .section .rodata
    .global densert_builtin_model_start
    .global densert_builtin_model_end
    .balign 64
densert_builtin_model_start:
    .incbin DENSERT_BUILTIN_MODEL_PATH
densert_builtin_model_end:
    .section .note.GNU-stack,"",@progbits

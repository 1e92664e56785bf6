/* Embeds the flat restorer stub built from stub.c. */
    .section .rodata
    .balign 4096
    .global initless_stub_begin
    .global initless_stub_end
initless_stub_begin:
    .incbin STUB_BIN
initless_stub_end:
    .section .note.GNU-stack,"",@progbits

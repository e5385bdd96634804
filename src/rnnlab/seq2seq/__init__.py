"""The character encoder-decoder family: pairs, the model, training, evaluation, run directories.

pairs      word pairs: built-in, generated or from TSV; the disjoint split; padded batches
model      Seq2SeqConfig, Encoder, Decoder, Seq2Seq, the masked loss
evaluate   translate (greedy, sampling, beam), exact match, CER, beam vs greedy
train      Seq2SeqTrainConfig and the trainer, through `rnnlab.training`
runs       run directories: config.json, heldout.tsv, loading the newest checkpoint
"""

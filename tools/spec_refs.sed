# Rewrite references to the external SPEC.md as references to docs/method.md,
# whose sections keep SPEC.md's numbering (1-7, 2.1-2.4, 2.3.1 ...).
# Usage (GNU sed):  grep -rlw SPEC python crates tests | xargs sed -E -i -f tools/spec_refs.sed
# \<SPEC\> only matches the whole word: SPEC_LABELS, SPEC_COLUMNS, SPEC5,
# SPEC_ABUNDANCES, SPECTRA, SPECTROGRAPH are names and stay as they are.

# One docstring that would pass 100 characters otherwise (tests/test_ensemble.py).
s/vs a loop over members, SPEC eq\. 3,/vs a member loop, SPEC eq. 3,/
# "SPEC eq. 3": the ensemble combination, paper eq. 3, described in method §4.
s/\<SPEC eq\. ?3\>/method §4, paper eq. 3/g
# The file itself, wherever it was said to be.
s/(\.\.\/shared\/|shared\/)?\<SPEC\.md\>/docs\/method.md/g
# Other spellings of a section or equation, should new code use them.
s/\<SPEC (§ ?|sec(t|tion)?\. ?)([0-9])/method §\3/g
s/\<SPEC (equation|eq) ?3\>/method §4, paper eq. 3/g
# "SPEC sections 3-4" -> "method §3-4"
s/\<SPEC sections ([0-9]+)/method §\1/g
# "SPEC section 2" -> "method §2"
s/\<SPEC section ([0-9]+)/method §\1/g
# "SPEC 2.3", "SPEC 2.3.1", "SPEC 2.1-2.2, 2.4", "SPEC 3" -> "method §2.3", ...
s/\<SPEC ([0-9])/method §\1/g
# Bare mentions, by what they refer to.
s/\<SPEC's pre-RNN/method §3's pre-RNN/g
s/\<SPEC describes/method §3 describes/g
s/\<SPEC default/method §3 default/g
s/\<The SPEC writes/Method §2.3 writes/g
s/\<SPEC (names|labels|elements)\>/method §5 \1/g
s/\<SPEC \(\[X\/H\]\)/method §5 ([X\/H])/g
# Anything left: the document as a whole.
s/\<SPEC's\>/docs\/method.md's/g
s/\<SPEC\>/docs\/method.md/g
# A docstring that now starts with the reference starts with a capital.
s/"""method §/"""Method §/g
# So does a plain comment (not a doc comment: outliers.rs continues a sentence there).
s/^(\s*)(\/\/|#) method §/\1\2 Method §/

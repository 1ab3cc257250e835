"""The BOLT #11 reader, checked against the specification's examples and field by field against PyPI ``bolt11``.

``read_bolt11`` replaces ``bolt11.decode`` on the paying customer's critical path: every invoice
the development wallet can issue must read exactly as the library reads it, every invoice the
specification calls invalid must be refused, and so must any tampering.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import bolt11
import coincurve
import pytest
from bech32 import CHARSET, bech32_encode, bech32_hrp_expand, bech32_polymod
from bolt11.models.tags import Tag, TagChar, Tags
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.pay import nip47
from dspy_pylon.pay.bolt11_reader import Bolt11, read_bolt11
from dspy_pylon.pay.dev_wallet import DevWalletRefusal, issue_invoice
from dspy_pylon.pay.dev_wallet.records import MAX_EXPIRY_S
from dspy_pylon.pay.invoice import decode_invoice

# ─── the specification's examples (lightning/bolts 11-payment-encoding.md, March 2026) ───
# All are signed with the spec's key; the valid ones carry this payment hash and secret.
SPEC_PAYEE = "03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad"
SPEC_HASH = "0001020304050607080900010203040506070809000102030405060708090102"
SPEC_SECRET = "11" * 32
SPEC_TIME = 1496314658
CAKE_HASH = "3925b6f67e2c340036ed12093dd44e0368df1b6ea26c53dbe4811f58fd5db8c1"
DONATION_TEXT = "Please consider supporting this project"

# Please make a donation of any amount using payment_hash 000102030405060708090001020304050607080900010203040506
DONATION = (
    "lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwz"
    "qfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq9qrsgq357wnc"
    "5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap9us6v52vjjsrvywa6rt52cm9r9zqt8r2t7mlcwspyetp5h2tztugp9l"
    "fyql"
)
# Please send $3 for a cup of coffee to the same peer, within one minute
COFFEE = (
    "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq"
    "5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu9qrsgquk0rl77nj30yxdy8j9vdx85fkpmdla2087ne0xh"
    "8nhedh8w27kyke0lp53ut353s06fv3qfegext0eh0ymjpf39tuven09sam30g4vgpfna3rh"
)
# Please send 0.0025 BTC for a cup of nonsense (ナンセンス 1杯) to the same peer, within one minute
NONSENSE = (
    "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq"
    "5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqzpu9qrsgqhtjpauu9ur7fw2thcl4y9vfvh4m"
    "9wlfyz2gem29g5ghe2aak2pm3ps8fdhtceqsaagty2vph7utlgj48u0ged6a337aewvraedendscp573dxr"
)
# Now send $24 for an entire list of things (hashed)
HASHED = (
    "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5r"
    "qwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqs9qrsgq7ea976txfraylv"
    "gzuxs8kgcw23ezlrszfnh8r6qtfpr6cxga50aj6txm9rxrydzd06dfeawfk6swupvz4erwnyutnjq7x39ymw6j38gp7ynn44"
)
# The same, on testnet, with a fallback address mk2QpYatsKicvFVuTAQLBryyccRXMUaGHP
TESTNET_P2PKH = (
    "lntb20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygshp58yjmdan79s6qqdhdzgynm4zwqd5"
    "d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfpp3x9et2e20v6pu37c5"
    "d9vax37wxq72un989qrsgqdj545axuxtnfemtpwkc45hx9d2ft7x04mt8q7y6t0k2dge9e7h8kpy9p34ytyslj3yu569aalz2xdk"
    "8xkd7ltxqld94u8h2esmsmacgpghe9k8"
)
# On mainnet, with fallback address 1RustyRX2oai4EYYDpQGWvEL62BBGqN9T with extra routing info to go via nodes 02
MAINNET_ROUTE = (
    "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5r"
    "qwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqsfpp3qjmp7lwpagxun9py"
    "gexvgpjdc4jdj85fr9yq20q82gphp2nflc7jtzrcazrra7wwgzxqc8u7754cdlpfrmccae92qgzqvzq2ps8pqqqqqqpqqqqq9qqq"
    "vpeuqafqxu92d8lr6fvg0r5gv0heeeqgcrqlnm6jhphu9y00rrhy4grqszsvpcgpy9qqqqqqgqqqqq7qqzq9qrsgqdfjcdk6w3ak"
    "5pca9hwfwfh63zrrz06wwfya0ydlzpgzxkn5xagsqz7x9j4jwe7yj7vaf2k9lqsdk45kts2fd0fkr28am0u4w95tt2nsq76cqw0"
)
# On mainnet, with fallback (P2SH) address 3EktnHQD7RiAE6uzMj2ZifT9YgRrkSgzQX
MAINNET_P2SH = (
    "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygshp58yjmdan79s6qqdhdzgynm4zwqd5"
    "d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfppj3a24vwu6r8ejrss3"
    "axul8rxldph2q7z99qrsgqz6qsgww34xlatfj6e3sngrwfy3ytkt29d2qttr8qz2mnedfqysuqypgqex4haa2h8fx3wnypranf3p"
    "dwyluftwe680jjcfp438u82xqphf75ym"
)
# On mainnet, with fallback (P2WPKH) address bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4
MAINNET_P2WPKH = (
    "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygshp58yjmdan79s6qqdhdzgynm4zwqd5"
    "d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfppqw508d6qejxtdg4y5"
    "r3zarvary0c5xw7k9qrsgqt29a0wturnys2hhxpner2e3plp6jyj8qx7548zr2z7ptgjjc7hljm98xhjym0dg52sdrvqamxdezkm"
    "qg4gdrvwwnf0kv2jdfnl4xatsqmrnsse"
)
# On mainnet, with fallback (P2WSH) address bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3
MAINNET_P2WSH = (
    "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygshp58yjmdan79s6qqdhdzgynm4zwqd5"
    "d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfp4qrp33g0q5c5txsp9a"
    "rysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q9qrsgq9vlvyj8cqvq6ggvpwd53jncp9nwc47xlrsnenq2zp70fq83qlgesn4u3uy"
    "f4tesfkkwwfg3qs54qe426hp3tz7z6sweqdjg05axsrjqp9yrrwc"
)
# On mainnet, with fallback (P2TR) address bc1pptdvg0d2nj99568qn6ssdy4cygnwuxgw2ukmnwgwz7jpqjz2kszse2s3lm
MAINNET_P2TR = (
    "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5r"
    "qwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqsfp4pptdvg0d2nj99568q"
    "n6ssdy4cygnwuxgw2ukmnwgwz7jpqjz2kszs9qrsgqy606dznq28exnydt2r4c29y56xjtn3sk4mhgjtl4pg2y4ar3249rq4ajlm"
    "j9jy8zvlzw7cr8mggqzm842xfr0v72rswzq9xvr4hknfsqwmn6xd"
)
# Please send 0.00967878534 BTC for a list of items within one week, amount in pico-BTC
PICO = (
    "lnbc9678785340p1pwmna7lpp5gc3xfm08u9qy06djf8dfflhugl6p7lgza6dsjxq454gxhj9t7a0sd8dgfkx7cmtwd68yetpd5s"
    "9xar0wfjn5gpc8qhrsdfq24f5ggrxdaezqsnvda3kkum5wfjkzmfqf3jkgem9wgsyuctwdus9xgrcyqcjcgpzgfskx6eqf9hzqnt"
    "eypzxz7fzypfhg6trddjhygrcyqezcgpzfysywmm5ypxxjemgw3hxjmn8yptk7untd9hxwg3q2d6xjcmtv4ezq7pqxgsxzmnyyqc"
    "jqmt0wfjjq6t5v4khxsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygsxqyjw5qcqp2rzjq0gxwkzc8w632"
    "3m55m4jyxcjwmy7stt9hwkwe2qxmy8zpsgg7jcuwz87fcqqeuqqqyqqqqlgqqqqn3qq9q9qrsgqrvgkpnmps664wgkp43l22qsgd"
    "w4ve24aca4nymnxddlnp8vh9v2sdxlu5ywdxefsfvm0fq3sesf08uf6q9a2ke0hc9j6z6wlxg5z5kqpu2v9wz"
)
# Please send $30 for coffee beans to the same peer, which supports features 8, 14 and 99, using secret 0x111111
FEATURES = (
    "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdeessp5zyg3"
    "zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q5sqqqqqqqqqqqqqqqqsgq2a25dxl5hrntdtn6zvydt7d66hyzs"
    "yhqs4wdynavys42xgl6sgx9c4g7me86a27t07mdtfry458rtjr0v92cnmswpsjscgt2vcse3sgpz3uapa"
)
# Same, but all upper case.
UPPER = (
    "LNBC25M1PVJLUEZPP5QQQSYQCYQ5RQWZQFQQQSYQCYQ5RQWZQFQQQSYQCYQ5RQWZQFQYPQDQ5VDHKVEN9V5SXYETPDEESSP5ZYG3"
    "ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYG3ZYGS9Q5SQQQQQQQQQQQQQQQQSGQ2A25DXL5HRNTDTN6ZVYDT7D66HYZS"
    "YHQS4WDYNAVYS42XGL6SGX9C4G7ME86A27T07MDTFRY458RTJR0V92CNMSWPSJSCGT2VCSE3SGPZ3UAPA"
)
# Same, but including fields which must be ignored.
IGNORED_FIELDS = (
    "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdeessp5zyg3"
    "zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q5sqqqqqqqqqqqqqqqqsgq2qrqqqfppnqqqqqqqqqqqqqqqqqqq"
    "qqqqqqqqqqqqqppnqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqpp4qqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"
    "qqqqqqqqqqqqqqqqqqqqqqqhpnqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqhp4qqqqqqqqqqqqqqqqqqqq"
    "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqspnqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqsp4qqqqqqqqqq"
    "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqnp5qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqnp"
    "kqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqz599y53s3ujmcfjp5xrdap68qxymkqphwsexhmhr8wdz5"
    "usdzkzrse33chw6dlp3jhuhge9ley7j2ayx36kawe7kmgg8sv5ugdyusdcqzn8z9x"
)
# Please send 0.01 BTC with payment metadata 0x01fafaf0
METADATA = (
    "lnbc10m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdp9wpshjmt9de6zqmt9w3skgct5vys"
    "xjmnnd9jx2mq8q8a04uqsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q2gqqqqqqsgq7hf8he7ecf7n"
    "4ffphs6awl9t6676rrclv9ckg3d3ncn7fct63p6s365duk5wrk202cfy3aj5xnnp5gs3vrdvruverwwq7yzhkf5a3xqpd05wjc"
)
# Public-key recovery with high-S signature
HIGH_S_RECOVERY = (
    "lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwz"
    "qfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq9qrsgq357wnc"
    "5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap2r09nt4ndd0unm3z9u5t48y6ucv4r5sg7lk98c77ctvjczkspk5qprc"
    "90gx"
)
# Same, but adding invalid unknown feature 100
UNKNOWN_FEATURE = (
    "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdeessp5zyg3"
    "zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q4psqqqqqqqqqqqqqqqqsgqtqyx5vggfcsll4wu246hz02kp85x"
    "4katwsk9639we5n5yngc3yhqkm35jnjw4len8vrnqnf5ejh0mzj9n3vz2px97evektfm2l6wqccp3y7372"
)
# Bech32 checksum is invalid.
BAD_CHECKSUM = (
    "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4ey"
    "qc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0n"
    "nqpnl2jfll544esqchsrnt"
)
# Malformed bech32 string (no 1)
NO_SEPARATOR = (
    "pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqz"
    "puyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0nnqpnl2jfll"
    "544esqchsrny"
)
# Malformed bech32 string (mixed case)
MIXED_CASE = (
    "LNBC2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4ey"
    "qc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0n"
    "nqpnl2jfll544esqchsrny"
)
# Signature is not recoverable.
UNRECOVERABLE = (
    "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu"
    "sp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9qrsgqwgt7mcn5yqw3yx0w94pswkpq6j9uh6xfqqqtsk4"
    "tnarugeektd4hg5975x9am52rz4qskukxdmjemg92vvqz8nvmsye63r5ykel43pgz7zq0g2"
)
# String is too short.
TOO_SHORT = (
    "lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6na6hlh"
)
# Invalid multiplier
BAD_MULTIPLIER = (
    "lnbc2500x1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu"
    "sp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9qrsgqrrzc4cvfue4zp3hggxp47ag7xnrlr8vgcmkjxk3"
    "j5jqethnumgkpqp23z9jclu3v0a7e0aruz366e9wqdykw6dxhdzcjjhldxq0w6wgqcnu43j"
)
# Invalid sub-millisatoshi precision.
SUB_MSAT = (
    "lnbc2500000001p1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4j"
    "sxqzpusp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9qrsgq0lzc236j96a95uv0m3umg28gclm5lqxtq"
    "qwk32uuk4k6673k6n5kfvx3d2h8s295fad45fdhmusm8sjudfhlf6dcsxmfvkeywmjdkxcp99202x"
)
# Missing required `s` field.
NO_SECRET = (
    "lnbc20m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5"
    "d7xmw5fk98klysy043l2ahrqs9qrsgq7ea976txfraylvgzuxs8kgcw23ezlrszfnh8r6qtfpr6cxga50aj6txm9rxrydzd06dfe"
    "awfk6swupvz4erwnyutnjq7x39ymw6j38gp49qdkj"
)
# Non canonical signature (high-S) with 'n' field defined
HIGH_S_WITH_N = (
    "lnbc25m1p70xwfzpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjype"
    "h2ursdae8g6twvus8g6rfwvs8qun0dfjkxaqnp4q0n326hr8v9zprg8gsvezcch06gfaqqhde2aj730yg0durunfhv66sp5zyg3z"
    "yg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9qrsgqsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3"
    "zyg3zygsp5cfzp9ugllvk03rltd6hvndxj26ux6gcxc5azyxk060rj9tzghct5zvjlps76gx8wpq5yuu79688k8gnm2c0al6v608"
    "s96l0xzrrlqqwnzxmu"
)


def _library_view(text: str) -> Bolt11:
    """What PyPI ``bolt11`` reads from ``text``, in the reader's terms."""
    decoded = bolt11.decode(text)
    expiry = decoded.tags.get(TagChar.expire_time)
    cltv = decoded.tags.get(TagChar.min_final_cltv_expiry)
    return Bolt11(
        hrp_currency=decoded.currency,
        amount_msats=None if decoded.amount_msat is None else int(decoded.amount_msat),
        timestamp=decoded.date,
        payment_hash=decoded.payment_hash,
        description=decoded.description,
        description_hash=decoded.description_hash,
        expiry=None if expiry is None else expiry.data,
        payee=decoded.payee,
        payment_secret=decoded.payment_secret,
        min_final_cltv_expiry=None if cltv is None else cltv.data,
    )


def _spec(
    currency: str = "bc",
    amount_msats: int | None = 2_000_000_000,
    *,
    description: str | None = None,
    description_hash: str | None = CAKE_HASH,
    expiry: int | None = None,
    cltv: int | None = None,
    payment_hash: str = SPEC_HASH,
    timestamp: int = SPEC_TIME,
    payee: str = SPEC_PAYEE,
) -> Bolt11:
    return Bolt11(
        hrp_currency=currency,
        amount_msats=amount_msats,
        timestamp=timestamp,
        payment_hash=payment_hash,
        description=description,
        description_hash=description_hash,
        expiry=expiry,
        payee=payee,
        payment_secret=SPEC_SECRET,
        min_final_cltv_expiry=cltv,
    )


_COFFEE = {"description": "coffee beans", "description_hash": None}
VALID = {
    "donation, no amount": (DONATION, _spec(amount_msats=None, description=DONATION_TEXT, description_hash=None)),
    "2500u, expiry": (
        COFFEE,
        _spec(amount_msats=250_000_000, description="1 cup coffee", description_hash=None, expiry=60),
    ),
    "UTF-8 description": (
        NONSENSE,
        _spec(amount_msats=250_000_000, description="ナンセンス 1杯", description_hash=None, expiry=60),
    ),
    "description hash": (HASHED, _spec()),
    "testnet, P2PKH fallback": (TESTNET_P2PKH, _spec("tb")),
    "fallback and route hints": (MAINNET_ROUTE, _spec()),
    "P2SH fallback": (MAINNET_P2SH, _spec()),
    "P2WPKH fallback": (MAINNET_P2WPKH, _spec()),
    "P2WSH fallback": (MAINNET_P2WSH, _spec()),
    "P2TR fallback": (MAINNET_P2TR, _spec()),
    "pico amount, cltv": (
        PICO,
        _spec(
            amount_msats=967_878_534,
            description="Blockstream Store: 88.85 USD for Blockstream Ledger Nano S x 1, "
            '"Back In My Day" Sticker x 2, "I Got Lightning Working" Sticker x 2 and 1 more items',
            description_hash=None,
            expiry=604_800,
            cltv=10,
            payment_hash="462264ede7e14047e9b249da94fefc47f41f7d02ee9b091815a5506bc8abf75f",
            timestamp=1572468703,
        ),
    ),
    "odd unknown feature 99": (FEATURES, _spec(amount_msats=2_500_000_000, **_COFFEE)),
    "upper case": (UPPER, _spec(amount_msats=2_500_000_000, **_COFFEE)),
    "payment metadata": (
        METADATA,
        _spec(amount_msats=1_000_000_000, description="payment metadata inside", description_hash=None),
    ),
}


@pytest.mark.parametrize(("text", "expected"), VALID.values(), ids=VALID.keys())
def test_the_specification_examples_read_as_the_specification_says(text: str, expected: Bolt11) -> None:
    assert read_bolt11(text) == expected
    assert read_bolt11(text) == _library_view(text)


def test_a_high_s_signature_is_accepted_by_public_key_recovery() -> None:
    # The spec's "Public-key recovery with high-S signature": the donation example with S negated and
    # the recovery id kept, so recovery yields another key (the library's too) — but it must not fail.
    invoice = read_bolt11(HIGH_S_RECOVERY)
    assert invoice == _library_view(HIGH_S_RECOVERY)
    assert invoice.payee != SPEC_PAYEE
    assert invoice.payment_hash == SPEC_HASH


def test_wrong_length_fields_fail_the_invoice_since_the_2025_specification() -> None:
    # BOLT #11 used to say a reader MUST skip p, h and n fields of the wrong length, and kept this
    # example ("fields which must be ignored") among the valid ones; since lightning/bolts#1243 (2025)
    # a reader "MUST fail the payment if any field with fixed data_length (p, h, s, n) does not have
    # the correct length". A payer is safer strict: this reader fails it, bolt11 2.2.0 skips them.
    with pytest.raises(MalformedEvent, match=r"Field p \(payment hash\) has length 51, not 52"):
        read_bolt11(IGNORED_FIELDS)
    assert bolt11.decode(IGNORED_FIELDS).payment_hash == SPEC_HASH


INVALID = {
    "unknown even feature 100": (UNKNOWN_FEATURE, "unknown feature bit 100"),
    "bad checksum": (BAD_CHECKSUM, "checksum"),
    "no separator": (NO_SEPARATOR, "separator"),
    "mixed case": (MIXED_CASE, "Mixed upper and lower case"),
    "signature not recoverable": (UNRECOVERABLE, "Signature does not recover"),
    "too short": (TOO_SHORT, "Too short"),
    "invalid multiplier": (BAD_MULTIPLIER, "multiplier 'x'"),
    "sub-millisatoshi": (SUB_MSAT, "whole number of millisatoshis"),
    "no s field": (NO_SECRET, r"No payment secret \(s field\)"),
    "high-S with n": (HIGH_S_WITH_N, "low-S"),
}


@pytest.mark.parametrize(("text", "reason"), INVALID.values(), ids=INVALID.keys())
def test_the_specification_invalid_examples_are_refused(text: str, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason) as refused:
        read_bolt11(text)
    assert len(str(refused.value)) < 120, "the reason is short and does not repeat the invoice"
    with pytest.raises(MalformedEvent, match="not a valid BOLT11 invoice"):
        decode_invoice(text)


# ─── invoices built field by field (to write what no issuer writes) ───

NODE = coincurve.PrivateKey(hashlib.sha256(b"bolt11 reader test node").digest())
NODE_PUBKEY = NODE.public_key.format().hex()
OTHER = coincurve.PrivateKey(hashlib.sha256(b"another node").digest())
NOW = 1_700_000_000
_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
Signer = Callable[[bytes], bytes]


def _u5(data: bytes) -> list[int]:
    """Bytes as 5-bit groups, padded with 0 bits (as writers MUST)."""
    bits = 8 * len(data)
    count = -(-bits // 5)
    value = int.from_bytes(data, "big") << (5 * count - bits)
    return [(value >> 5 * (count - 1 - i)) & 31 for i in range(count)]


def _u5_int(value: int, count: int | None = None) -> list[int]:
    """``value`` in 5-bit groups: minimal, or ``count`` groups (leading zeros)."""
    count = count if count is not None else max(1, -(-value.bit_length() // 5))
    return [(value >> 5 * (count - 1 - i)) & 31 for i in range(count)]


def _field(char: str, data: list[int]) -> list[int]:
    return [CHARSET.index(char), len(data) >> 5, len(data) & 31, *data]


def _basics(*, description: str = "coffee") -> list[list[int]]:
    return [
        _field("p", _u5(b"\x01" * 32)),
        _field("s", _u5(b"\x02" * 32)),
        _field("d", _u5(description.encode())),
    ]


def _sign(key: coincurve.PrivateKey) -> Signer:
    return lambda digest: key.sign_recoverable(digest, hasher=None)


def _forge(
    fields: list[list[int]],
    *,
    hrp: str = "lnbcrt10n",
    timestamp: int = NOW,
    signer: Signer | None = None,
    tail: list[int] | None = None,
) -> str:
    """An invoice with exactly ``fields``, correctly signed (by NODE unless ``signer``) and checksummed."""
    body = _u5_int(timestamp, 7) + [v for field in fields for v in field] + (tail or [])
    value = 0
    for v in body:
        value = value << 5 | v
    pad = -5 * len(body) % 8
    message = hrp.encode() + (value << pad).to_bytes((5 * len(body) + pad) // 8, "big")
    signature = (signer or _sign(NODE))(hashlib.sha256(message).digest())
    return str(bech32_encode(hrp, body + _u5(signature)))


def _refused(text: str, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        read_bolt11(text)


def test_a_forged_invoice_reads_like_the_library_reads_it() -> None:
    text = _forge([*_basics(), _field("x", _u5_int(600)), _field("c", _u5_int(144))])
    invoice = read_bolt11(text)
    assert invoice == _library_view(text)
    assert (invoice.amount_msats, invoice.expiry, invoice.min_final_cltv_expiry) == (1000, 600, 144)
    assert (invoice.payee, invoice.description, invoice.hrp_currency) == (NODE_PUBKEY, "coffee", "bcrt")


@pytest.mark.parametrize(
    ("hrp", "msats"),
    [
        ("lnbc", None),
        ("lnbc1", 100_000_000_000),
        ("lnbc21", 2_100_000_000_000),
        ("lnbc3m", 300_000_000),
        ("lnbc25u", 2_500_000),
        ("lnbc7n", 700),
        ("lnbc10p", 1),
        ("lnbc12340p", 1234),
        ("lntbs5u", 500_000),
        ("lnbcrt999n", 99_900),
    ],
)
def test_amounts_with_every_multiplier(hrp: str, msats: int | None) -> None:
    text = _forge(_basics(), hrp=hrp)
    assert read_bolt11(text).amount_msats == msats
    assert read_bolt11(text) == _library_view(text)


@pytest.mark.parametrize(
    ("hrp", "reason"),
    [
        ("lnbc0n", "amount is zero"),
        ("lnbc000u", "amount is zero"),
        ("lnbc0p", "amount is zero"),
        ("lnbc010u", "leading zeros"),
        ("lnbc12341p", "whole number of millisatoshis"),
        ("lnbc5x", "multiplier 'x'"),
        ("lnbc5mm", "not 'ln' \\+ currency"),
        ("lnbc5m0", "not 'ln' \\+ currency"),
        ("lnxyz5m", "Unknown currency prefix"),
        ("lnsb5m", "Unknown currency prefix"),
        ("bc5m", "not 'ln' \\+ currency"),
        ("ln5m", "not 'ln' \\+ currency"),
        ("lnbc" + "1" * 80, "not 'ln' \\+ currency"),  # longer than BIP-173's 83 characters
    ],
)
def test_bad_human_readable_parts_are_refused(hrp: str, reason: str) -> None:
    _refused(_forge(_basics(), hrp=hrp), reason)


def test_the_first_of_repeated_fields_is_used() -> None:
    # A writer puts its preferred field first; the payer SHOULD use the first p field.
    text = _forge(
        [
            *_basics(description="first"),
            _field("p", _u5(b"\x09" * 32)),
            _field("d", _u5(b"second")),
            _field("x", _u5_int(60)),
            _field("x", _u5_int(120)),
        ]
    )
    invoice = read_bolt11(text)
    assert (invoice.payment_hash, invoice.description, invoice.expiry) == ("01" * 32, "first", 60)
    assert invoice == _library_view(text)


def test_unknown_fields_and_odd_or_known_features_are_skipped() -> None:
    features = (1 << 99) | (1 << 14) | (1 << 8) | (1 << 17)  # unknown odd 99, known 8, 14 and 17
    text = _forge(
        [
            *_basics(),
            _field("9", _u5_int(features)),
            _field("2", [0, 0, 0]),  # an unknown type
            _field("f", [19, *([0] * 32)]),  # a fallback of unknown version
            _field("m", _u5(b"\x01\xfa")),
        ]
    )
    assert read_bolt11(text) == _library_view(text)


MALFORMED = {
    "no p": ([_field("s", _u5(b"\x02" * 32)), _field("d", [])], r"No payment hash \(p field\)"),
    "no s": ([_field("p", _u5(b"\x01" * 32)), _field("d", [])], r"No payment secret \(s field\)"),
    "neither d nor h": (_basics()[:2], "exactly one of a description"),
    "both d and h": ([*_basics(), _field("h", _u5(b"\x03" * 32))], "exactly one of a description"),
    "p of 53": ([*_basics(), _field("p", _u5(b"\x01" * 33))], r"Field p \(payment hash\) has length 53"),
    "s of 50": ([*_basics(), _field("s", _u5(b"\x01" * 31))], r"Field s \(payment secret\) has length 50"),
    "h of 50": ([*_basics()[:2], _field("h", _u5(b"\x01" * 31))], r"Field h \(description hash\) has length 50"),
    "n of 52": ([*_basics(), _field("n", _u5(b"\x02" * 32))], r"Field n \(payee\) has length 52"),
    "x with a leading 0": ([*_basics(), _field("x", [0, 1])], "Field x is empty or not minimally encoded"),
    "empty x": ([*_basics(), _field("x", [])], "Field x is empty or not minimally encoded"),
    "c with a leading 0": ([*_basics(), _field("c", [0, 9])], "Field c is empty or not minimally encoded"),
    "9 with a leading 0": ([*_basics(), _field("9", [0, 1])], "features .* not minimally encoded"),
    "unknown even feature": ([*_basics(), _field("9", _u5_int(1 << 100))], "unknown feature bit 100"),
    "retired even feature": ([*_basics(), _field("9", _u5_int(1 << 2))], "unknown feature bit 2"),
    "d not UTF-8": ([*_basics()[:2], _field("d", _u5(b"\xff\xfe"))], r"description \(d field\) is not UTF-8"),
}


@pytest.mark.parametrize(("fields", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_fields_are_refused(fields: list[list[int]], reason: str) -> None:
    _refused(_forge(fields), reason)


def test_a_field_longer_than_what_is_left_is_refused() -> None:
    _refused(_forge(_basics(), tail=[CHARSET.index("d"), 1, 31]), "runs into the signature")
    _refused(_forge(_basics(), tail=[CHARSET.index("d"), 1]), "cut short")


def test_a_bech32m_checksum_is_refused() -> None:
    valid = _forge(_basics())
    hrp, data = valid[: valid.rindex("1")], [CHARSET.index(c) for c in valid[valid.rindex("1") + 1 : -6]]
    polymod = bech32_polymod([*bech32_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ 0x2BC830A3
    bech32m = (
        hrp
        + "1"
        + "".join(CHARSET[c] for c in data)
        + "".join(CHARSET[(polymod >> 5 * (5 - i)) & 31] for i in range(6))
    )
    assert read_bolt11(valid).payee == NODE_PUBKEY
    _refused(bech32m, "checksum")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "separator"),
        ("1qqqqqq", "separator"),
        ("lnbc1" + "q" * 116, "Too short"),
        ("lnbc1bqqqqq", "not in the bech32 alphabet"),
        ("lnbc1pvjluez\u00e9", "ASCII"),
    ],
)
def test_strings_that_are_not_bech32_are_refused(text: str, reason: str) -> None:
    _refused(text, reason)


# ─── the signature and the n field ───


def test_an_explicit_payee_is_checked_against_the_signature() -> None:
    genuine = _forge([*_basics(), _field("n", _u5(NODE.public_key.format()))])
    assert read_bolt11(genuine).payee == NODE_PUBKEY
    assert read_bolt11(genuine) == _library_view(genuine)
    # Re-signed by our node but naming another one as the payee.
    wrong = _forge([*_basics(), _field("n", _u5(OTHER.public_key.format()))])
    _refused(wrong, "Signature does not verify against the n field")
    # Signed by the other node but naming ours: the same.
    _refused(_forge([*_basics(), _field("n", _u5(NODE.public_key.format()))], signer=_sign(OTHER)), "Signature")
    # An n field that is not a curve point.
    _refused(_forge([*_basics(), _field("n", _u5(b"\x05" + b"\x01" * 32))]), "not a valid secp256k1 value")


def test_a_bolt11_re_signed_invoice_with_a_wrong_payee_is_refused() -> None:
    # The library writes the n field we give it and signs with the key we give it.
    payment_hash = hashlib.sha256(b"wrong payee").hexdigest()
    tags = Tags(
        [
            Tag(TagChar.payment_hash, payment_hash),
            Tag(TagChar.payment_secret, "22" * 32),
            Tag(TagChar.description, "job"),
            Tag(TagChar.payee, OTHER.public_key.format().hex()),
        ]
    )
    invoice = bolt11.Bolt11(currency="bcrt", date=NOW, tags=tags, amount_msat=bolt11.MilliSatoshi(5000))
    text = str(bolt11.encode(invoice, NODE.to_hex(), keep_payee=True))
    _refused(text, "Signature does not verify against the n field")


def _high_s(recovery_flip: int) -> Signer:
    def sign(digest: bytes) -> bytes:
        low = NODE.sign_recoverable(digest, hasher=None)
        high_s = _ORDER - int.from_bytes(low[32:64], "big")
        return low[:32] + high_s.to_bytes(32, "big") + bytes([low[64] ^ recovery_flip])

    return sign


def test_high_s_signatures_recover_but_fail_with_an_n_field() -> None:
    # (r, n - s) with the recovery id's parity flipped is the same signature, high-S.
    assert read_bolt11(_forge(_basics(), signer=_high_s(1))).payee == NODE_PUBKEY
    assert read_bolt11(_forge(_basics(), signer=_high_s(0))).payee != NODE_PUBKEY
    payee = _field("n", _u5(NODE.public_key.format()))
    _refused(_forge([*_basics(), payee], signer=_high_s(1)), "low-S")


@pytest.mark.parametrize("recovery_id", [4, 31, 255])
def test_a_recovery_id_above_3_is_refused(recovery_id: int) -> None:
    signer = _sign(NODE)
    _refused(_forge(_basics(), signer=lambda digest: signer(digest)[:64] + bytes([recovery_id])), "recovery id")


def test_a_signature_with_r_or_s_out_of_range_is_refused() -> None:
    payee = _field("n", _u5(NODE.public_key.format()))
    for bad in (b"\xff" * 32 + b"\x01" * 32, b"\x00" * 64):
        _refused(_forge(_basics(), signer=lambda digest, bad=bad: bad + b"\x00"), "Signature")
        _refused(_forge([*_basics(), payee], signer=lambda digest, bad=bad: bad + b"\x00"), "Signature")


# ─── invoices from our issuer, against the library ───

_SECRETS = st.integers(min_value=1, max_value=_ORDER - 1).map(lambda k: f"{k:064x}")
_TEXT = st.text(st.characters(codec="utf-8"), max_size=700)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=_SECRETS,
    amount=st.one_of(st.integers(1, 10**7), st.integers(1, nip47.MAX_AMOUNT_MSATS)),
    description=st.one_of(st.none(), _TEXT),
    description_hash=st.one_of(st.none(), st.binary(min_size=32, max_size=32).map(bytes.hex)),
    expiry=st.integers(1, MAX_EXPIRY_S),
    now=st.integers(0, 2**35 - 1),
)
def test_issued_invoices_read_exactly_as_the_library_reads_them(
    secret: str, amount: int, description: str | None, description_hash: str | None, expiry: int, now: int
) -> None:
    try:
        text, payment_hash, _, created_at = issue_invoice(
            secret, amount, description, expiry, now=now, description_hash=description_hash
        )
    except DevWalletRefusal:
        return  # a description over 639 bytes, or an amount bolt11 2.2.0 cannot write
    invoice = read_bolt11(text)
    assert invoice == _library_view(text)
    assert read_bolt11(text.upper()) == invoice
    assert (invoice.amount_msats, invoice.payment_hash, invoice.timestamp) == (amount, payment_hash, created_at)
    assert (invoice.expiry, invoice.hrp_currency, invoice.min_final_cltv_expiry) == (expiry, "bcrt", None)
    assert invoice.payee == coincurve.PrivateKey.from_hex(secret).public_key.format().hex()
    if description_hash is None:
        assert (invoice.description, invoice.description_hash) == (description or "", None)
    else:
        assert (invoice.description, invoice.description_hash) == (None, description_hash)


# ─── tampering ───

SAMPLE, *_ = issue_invoice("42" * 32, 123_456, "pylon job " + "ab" * 32, 600, now=NOW)
_ALPHABET = CHARSET + "1bio"  # the bech32 characters, the separator and the letters bech32 leaves out


def _refused_or_as_the_library_reads(edited: str) -> bool:
    """Whether ``edited`` is refused; if it is not, it must read exactly as the library reads it."""
    try:
        tampered = read_bolt11(edited)
    except MalformedEvent as exc:
        assert SAMPLE[20:40] not in str(exc), "a refusal never repeats the invoice"
        return True
    assert tampered == _library_view(edited)
    return False


def test_every_single_character_change_is_refused() -> None:
    assert read_bolt11(SAMPLE) == _library_view(SAMPLE)
    substitutions = 0
    for position, char in enumerate(SAMPLE):
        before, after = SAMPLE[:position], SAMPLE[position + 1 :]
        # bech32 detects every substituted character, anywhere (its generator does not divide
        # any single-error polynomial), and one upper-case letter is mixed case.
        edits = [before + other + after for other in _ALPHABET if other != char]
        if char.isalpha():
            edits.append(before + char.upper() + after)
        for edited in edits:
            assert _refused_or_as_the_library_reads(edited)
        substitutions += len(edits)
        # A deleted character is caught too, by the checksum or else by the signature (the data shifts).
        assert _refused_or_as_the_library_reads(before + after)
    assert substitutions > 10_000

"""The transcript's stylesheet: Discord's dark theme, readable from phone width up.

No emoji font is named in ``font-family``: the browser's own fallback finds the colour emoji font
(naming one there makes Chromium take its digits and spaces for ordinary text). Long words and
Japanese wrap inside the 390 px of a phone; an option chip (``name: value``) wraps as one piece
and breaks inside only when it is longer than a line.
"""

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#313338;color:#dbdee1;font:15px/1.375 "gg sans","Noto Sans","Helvetica Neue",
Helvetica,Arial,sans-serif;-webkit-text-size-adjust:100%;overflow-wrap:anywhere;line-break:strict}
header{position:sticky;top:0;background:#313338;border-bottom:1px solid #1f2023;padding:12px 16px;
font-weight:600;color:#f2f3f5;z-index:1}
main{max-width:900px;margin:0 auto;padding:8px 0 40px}
.msg{display:flex;gap:12px;padding:6px 16px;margin-top:10px}
.msg.ephemeral{background:rgba(88,101,242,.08);border-left:2px solid #5865f2}
.avatar{flex:0 0 40px;height:40px;border-radius:50%;background:#f0b232;color:#1e1f22;display:flex;
align-items:center;justify-content:center;font-weight:700;font-size:18px}
.avatar.bot{background:#5865f2}
.body{min-width:0;flex:1}
.head{display:flex;align-items:center;gap:6px;flex-wrap:wrap}
.name{font-weight:600;color:#f2f3f5}.name.bot{color:#c9cdfb}
.bottag{background:#5865f2;color:#fff;font-size:10px;font-weight:700;border-radius:3px;padding:0 4px;
line-height:15px}
.muted{color:#949ba4;font-size:12px}
.replyto{color:#949ba4;font-size:13px;margin-bottom:2px}
.slash{color:#c9cdfb;font-weight:600}
.command{margin-top:2px;display:flex;flex-wrap:wrap;gap:4px;align-items:center;min-width:0}
.opt{background:#1e1f22;border-radius:4px;padding:1px 6px;font-size:13px;display:inline-block;
max-width:100%;min-width:0}
.optname{color:#949ba4;white-space:nowrap}.optname:after{content:":"}
.thumb{width:32px;height:32px;border-radius:3px;object-fit:cover;vertical-align:middle}
.action{color:#949ba4;font-size:13px;padding:2px 16px 2px 68px}
.content{white-space:normal;overflow-wrap:anywhere}
code{background:#2b2d31;border:1px solid #1e1f22;border-radius:3px;padding:0 3px;font-size:85%;
font-family:Consolas,"Courier New",monospace}
pre{background:#2b2d31;border:1px solid #1e1f22;border-radius:4px;padding:7px;overflow-x:auto;
font:13px/1.3 Consolas,"Courier New",monospace;margin:4px 0;white-space:pre}
.mention{background:rgba(88,101,242,.3);color:#c9cdfb;border-radius:3px;padding:0 2px;font-weight:500}
.ts{background:rgba(255,255,255,.06);border-radius:3px;padding:0 2px}
.embed{display:flex;gap:12px;background:#2b2d31;border-left:4px solid #1e1f22;border-radius:4px;
padding:8px 12px 12px;margin-top:6px;max-width:520px}
.emain{min-width:0;flex:1}
.etitle{font-weight:600;color:#f2f3f5;margin-top:4px}
.edesc{font-size:14px;margin-top:6px;overflow-wrap:anywhere}
.fields{display:flex;flex-wrap:wrap;gap:8px 16px;margin-top:8px}
.field{flex:1 1 100%;min-width:0;font-size:14px}.field.inline{flex:1 1 28%}
.fname{font-weight:600;color:#f2f3f5;margin-bottom:2px}
.fvalue{overflow-wrap:anywhere}
.efoot{font-size:12px;color:#949ba4;margin-top:8px}
.eimage{display:block;max-width:100%;border-radius:4px;margin-top:12px}
.ethumb{flex:0 0 80px;width:80px;height:80px;object-fit:cover;border-radius:4px;margin-top:8px}
.missing{color:#949ba4;font-size:12px}
.gallery{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px}
.attimg{display:block;max-width:min(100%,520px);border-radius:8px}
.file{background:#2b2d31;border:1px solid #1e1f22;border-radius:8px;padding:10px;margin-top:6px;
max-width:432px;overflow-wrap:anywhere}
.file a{color:#00a8fc}
.row{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}
.btn{border-radius:3px;padding:2px 16px;min-height:32px;display:inline-flex;align-items:center;
font-size:14px;font-weight:500;color:#fff;background:#4e5058}
.btn.primary{background:#5865f2}.btn.success{background:#248046}.btn.danger{background:#da373c}
.btn.link{background:#4e5058}
.btn.disabled,.select.disabled{opacity:.5;cursor:not-allowed}
.select{background:#1e1f22;border:1px solid #1e1f22;border-radius:4px;padding:8px 12px;min-width:0;
flex:1 1 100%;max-width:400px;display:flex;justify-content:space-between;font-size:14px;color:#dbdee1}
.chev{color:#b5bac1}
.eph{font-size:12px;color:#949ba4;margin-top:4px}.eph u{color:#00a8fc;text-decoration:none;white-space:nowrap}
@media (max-width:520px){.msg{gap:8px;padding:6px 8px}.avatar{flex-basis:32px;height:32px;font-size:15px}
.action{padding-left:48px}.field.inline{flex-basis:45%}.ethumb{flex-basis:56px;width:56px;height:56px}}
"""

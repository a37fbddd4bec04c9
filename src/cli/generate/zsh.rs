//! The zsh completion script: the same table and walker as the bash one,
//! with descriptions for subcommands and options.

use std::fmt::Write;

use super::model::{Node, Values};
use super::sh_quote;

const WALKER: &str = r#"
# Finds what the word under the cursor is (see the bash script for the idea).
# Sets kind (sub, opt, vm, files, dirs, choices:…, any), node (the subcommand
# path; not `path`, which is zsh's $PATH) and data_dir.
_maqet_state() {
    local -a subs opts pos
    local -A vals canon desc
    local last_repeats w want="" npos=0 i
    node="" data_dir=""
    _maqet_node ""
    for ((i = 2; i < CURRENT; i++)); do
        w=${words[i]}
        if [[ -n $want ]]; then
            [[ $want == --data-dir ]] && data_dir=$w
            want=""
            continue
        fi
        case $w in
            --data-dir=*) data_dir=${w#*=}; continue ;;
            -*=*) continue ;;
            -*) (( ${+vals[$w]} )) && want=$w; continue ;;
        esac
        if (( ${#subs} )) && (( ${subs[(Ie)$w]} )); then
            node="${node:+$node }${canon[$w]:-$w}"
            npos=0
            _maqet_node "$node"
            continue
        fi
        (( npos++ ))
    done
    local cur=${words[CURRENT]}
    if [[ -n $want ]]; then
        kind=${vals[$want]}
    elif [[ $cur == -*=* ]]; then
        kind=${vals[${cur%%=*}]:-any}
    elif [[ $cur == -* ]]; then
        kind=opt
    elif (( ${#subs} )); then
        kind=sub
    elif (( npos < ${#pos} )); then
        kind=${pos[npos+1]}
    elif (( last_repeats && ${#pos} )); then
        kind=${pos[-1]}
    else
        kind=any
    fi
}

_maqet() {
    local kind node data_dir
    local -a subs opts pos described
    local -A vals canon desc
    local w
    _maqet_state
    _maqet_node "$node"
    [[ ${words[CURRENT]} == -*=* ]] && compset -P '*='
    case $kind in
        sub)
            described=()
            for w in $subs; do described+=("$w:${desc[$w]}"); done
            _describe -t commands 'maqet command' described
            ;;
        opt)
            described=()
            for w in $opts; do described+=("$w:${desc[$w]}"); done
            _describe -t options 'option' described
            ;;
        vm)
            local -a vms
            local bin=${words[1]/#\~/$HOME} dd=${data_dir/#\~/$HOME}
            vms=(${(f)"$("$bin" ${dd:+--data-dir "$dd"} __complete-vms 2>/dev/null)"})
            compadd -a vms
            ;;
        image)
            local -a images
            local bin=${words[1]/#\~/$HOME}
            images=(${(f)"$("$bin" __complete-images 2>/dev/null)"})
            compadd -a images
            ;;
        host)
            local -a hosts
            local bin=${words[1]/#\~/$HOME}
            hosts=(${(f)"$("$bin" __complete-hosts 2>/dev/null)"})
            compadd -a hosts
            ;;
        files) _files ;;
        dirs) _files -/ ;;
        choices:*) compadd -- ${=kind#choices:} ;;
        *) return 1 ;;
    esac
}

if [[ ${funcstack[1]} == _maqet ]]; then
    _maqet "$@"
else
    compdef _maqet maqet
fi
"#;

fn kind_word(v: &Values) -> String {
    match v {
        Values::Choices(c) => format!("choices:{}", c.join(" ")),
        other => other.kind().to_string(),
    }
}

/// `_describe` splits on the first unescaped colon.
fn desc(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

pub fn render(root: &Node) -> String {
    let mut s = String::from(
        "#compdef maqet\n\
         # zsh completion for maqet. Generated from its command-line definitions by\n\
         # `maqet __generate completions zsh`; do not edit.\n\n\
         # Sets subs, opts, desc (word -> description), vals (option -> value kind),\n\
         # canon (alias -> name), pos and last_repeats for a subcommand path.\n\
         _maqet_node() {\n    vals=() canon=() desc=()\n    case $1 in\n",
    );
    for n in root.walk() {
        let mut subs = Vec::new();
        let mut descs = Vec::new();
        for c in &n.subcommands {
            for w in std::iter::once(c.name()).chain(c.aliases.iter().map(String::as_str)) {
                subs.push(sh_quote(w));
                descs.push(format!("{} {}", sh_quote(w), sh_quote(&desc(&c.about))));
            }
        }
        let mut opts = Vec::new();
        let mut vals = Vec::new();
        for o in &n.opts {
            for name in &o.names {
                opts.push(sh_quote(name));
                descs.push(format!("{} {}", sh_quote(name), sh_quote(&desc(&o.help))));
                if let Some(v) = &o.value {
                    vals.push(format!("{} {}", sh_quote(name), sh_quote(&kind_word(v))));
                }
            }
        }
        let canon: Vec<String> = n
            .subcommands
            .iter()
            .flat_map(|c| {
                c.aliases
                    .iter()
                    .map(move |a| format!("{} {}", sh_quote(a), sh_quote(c.name())))
            })
            .collect();
        let pos: Vec<String> = n
            .positionals
            .iter()
            .map(|v| sh_quote(&kind_word(v)))
            .collect();
        let _ = writeln!(s, "        {})", sh_quote(&n.key()));
        let _ = writeln!(s, "            subs=({})", subs.join(" "));
        let _ = writeln!(s, "            opts=({})", opts.join(" "));
        let _ = writeln!(s, "            desc=({})", descs.join(" "));
        let _ = writeln!(s, "            vals=({})", vals.join(" "));
        let _ = writeln!(s, "            canon=({})", canon.join(" "));
        let _ = writeln!(s, "            pos=({})", pos.join(" "));
        let _ = writeln!(s, "            last_repeats={}", u8::from(n.last_repeats));
        s.push_str("            ;;\n");
    }
    s.push_str("        *) subs=() opts=() pos=() last_repeats=0 ;;\n    esac\n}\n");
    s.push_str(WALKER);
    s
}

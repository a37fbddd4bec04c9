//! The bash completion script: a table of the command tree (one `case`
//! arm per subcommand) and a fixed walker that finds the subcommand, the
//! option awaiting a value, or the positional argument under the cursor.

use std::fmt::Write;

use super::model::{Node, Values};
use super::sh_quote;

const WALKER: &str = r#"
# The word under the cursor: an option, a subcommand, or a value whose kind
# the table gives (vm: asked of `maqet __complete-vms` now, so new VMs show).
_maqet() {
    local cur words cword
    if declare -F _get_comp_words_by_ref >/dev/null; then
        _get_comp_words_by_ref -n =: cur words cword
    else
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
        cur=${COMP_WORDS[COMP_CWORD]}
    fi
    local subs opts pos last_repeats path="" npos=0 want="" data_dir="" i w kind
    local -A vals canon
    _maqet_node ""
    for ((i = 1; i < cword; i++)); do
        w=${words[i]}
        if [[ -n $want ]]; then
            [[ $want == --data-dir ]] && data_dir=$w
            want=""
            continue
        fi
        case $w in
            --data-dir=*) data_dir=${w#*=}; continue ;;
            -*=*) continue ;;
            -*) [[ -n ${vals[$w]+set} ]] && want=$w; continue ;;
        esac
        if [[ -n $subs && " $subs " == *" $w "* ]]; then
            path="${path:+$path }${canon[$w]:-$w}"
            npos=0
            _maqet_node "$path"
            continue
        fi
        npos=$((npos + 1))
    done
    if [[ -n $want ]]; then
        kind=${vals[$want]}
    elif [[ $cur == -*=* ]]; then
        kind=${vals[${cur%%=*}]:-any}
        cur=${cur#*=}
    elif [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
        return 0
    elif [[ -n $subs ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$subs" -- "$cur")
        return 0
    elif ((npos < ${#pos[@]})); then
        kind=${pos[npos]}
    elif ((last_repeats && ${#pos[@]} > 0)); then
        kind=${pos[-1]}
    else
        kind=any
    fi
    case $kind in
        vm)
            local bin=${words[0]/#\~/$HOME} dd=${data_dir/#\~/$HOME}
            mapfile -t COMPREPLY < <(compgen -W "$("$bin" ${dd:+--data-dir "$dd"} __complete-vms 2>/dev/null)" -- "$cur")
            ;;
        image)
            local bin=${words[0]/#\~/$HOME}
            mapfile -t COMPREPLY < <(compgen -W "$("$bin" __complete-images 2>/dev/null)" -- "$cur")
            ;;
        host)
            local bin=${words[0]/#\~/$HOME}
            mapfile -t COMPREPLY < <(compgen -W "$("$bin" __complete-hosts 2>/dev/null)" -- "$cur")
            ;;
        files)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            ;;
        dirs)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -d -- "$cur")
            ;;
        choices:*)
            mapfile -t COMPREPLY < <(compgen -W "${kind#choices:}" -- "$cur")
            ;;
        *) COMPREPLY=() ;;
    esac
    return 0
}

complete -F _maqet maqet
"#;

fn kind_word(v: &Values) -> String {
    match v {
        Values::Choices(c) => format!("choices:{}", c.join(" ")),
        other => other.kind().to_string(),
    }
}

pub fn render(root: &Node) -> String {
    let mut s = String::from(
        "# bash completion for maqet. Generated from its command-line definitions by\n\
         # `maqet __generate completions bash`; do not edit.\n\n\
         # Sets subs, opts, vals (option -> value kind), canon (alias -> name),\n\
         # pos (kinds of the positional arguments) and last_repeats for a subcommand path.\n\
         _maqet_node() {\n    vals=() canon=()\n    case $1 in\n",
    );
    for n in root.walk() {
        let subs: Vec<&str> = n
            .subcommands
            .iter()
            .flat_map(|c| std::iter::once(c.name()).chain(c.aliases.iter().map(String::as_str)))
            .collect();
        let opts: Vec<&str> = n
            .opts
            .iter()
            .flat_map(|o| o.names.iter().map(String::as_str))
            .collect();
        let _ = writeln!(s, "        {})", sh_quote(&n.key()));
        let _ = writeln!(s, "            subs={}", sh_quote(&subs.join(" ")));
        let _ = writeln!(s, "            opts={}", sh_quote(&opts.join(" ")));
        let vals: Vec<String> = n
            .opts
            .iter()
            .filter_map(|o| o.value.as_ref().map(|v| (o, v)))
            .flat_map(|(o, v)| {
                o.names
                    .iter()
                    .map(move |name| format!("[{name}]={}", sh_quote(&kind_word(v))))
            })
            .collect();
        if !vals.is_empty() {
            let _ = writeln!(s, "            vals=({})", vals.join(" "));
        }
        let canon: Vec<String> = n
            .subcommands
            .iter()
            .flat_map(|c| c.aliases.iter().map(move |a| format!("[{a}]={}", c.name())))
            .collect();
        if !canon.is_empty() {
            let _ = writeln!(s, "            canon=({})", canon.join(" "));
        }
        let pos: Vec<String> = n
            .positionals
            .iter()
            .map(|v| sh_quote(&kind_word(v)))
            .collect();
        let _ = writeln!(s, "            pos=({})", pos.join(" "));
        let _ = writeln!(s, "            last_repeats={}", u8::from(n.last_repeats));
        s.push_str("            ;;\n");
    }
    s.push_str("        *) subs='' opts='' pos=() last_repeats=0 ;;\n    esac\n}\n");
    s.push_str(WALKER);
    s
}

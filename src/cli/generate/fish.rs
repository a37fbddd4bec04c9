//! The fish completion script: one `complete` rule whose candidates come
//! from a function walking the same table as the bash and zsh scripts.

use std::fmt::Write;

use super::model::{Node, Values};

const WALKER: &str = r#"
# Prints `value<TAB>description` candidates for the word under the cursor.
function __maqet_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l bin $tokens[1]
    set -e tokens[1]
    set -l subs
    set -l opts
    set -l vals
    set -l canon
    set -l pos
    set -l descs
    set -l last_repeats 0
    set -l path ''
    set -l want ''
    set -l data_dir ''
    set -l npos 0
    __maqet_node ''
    for w in $tokens
        if test -n "$want"
            test "$want" = --data-dir; and set data_dir $w
            set want ''
            continue
        end
        switch $w
            case '--data-dir=*'
                set data_dir (string replace -r '^[^=]*=' '' -- $w)
                continue
            case '-*=*'
                continue
            case '-*'
                test -n "$(__maqet_lookup $w $vals)"; and set want $w
                continue
        end
        if contains -- $w $subs
            set -l c (__maqet_lookup $w $canon)
            test -n "$c"; or set c $w
            set path (string trim -- "$path $c")
            set npos 0
            __maqet_node $path
            continue
        end
        set npos (math $npos + 1)
    end
    set -l kind any
    set -l prefix ''
    if test -n "$want"
        set kind (__maqet_lookup $want $vals)
    else if string match -q -- '-*=*' $cur
        set -l parts (string split -m1 = -- $cur)
        set kind (__maqet_lookup $parts[1] $vals)
        set prefix "$parts[1]="
        set cur $parts[2]
    else if string match -q -- '-*' $cur
        for o in $opts
            printf '%s\t%s\n' $o (__maqet_lookup $o $descs)
        end
        return
    else if test (count $subs) -gt 0
        for s in $subs
            printf '%s\t%s\n' $s (__maqet_lookup $s $descs)
        end
        return
    else if test $npos -lt (count $pos)
        set kind $pos[(math $npos + 1)]
    else if test $last_repeats = 1 -a (count $pos) -gt 0
        set kind $pos[-1]
    end
    switch $kind
        case vm
            set -l dd
            test -n "$data_dir"; and set dd --data-dir $data_dir
            $bin $dd __complete-vms 2>/dev/null
        case image
            $bin __complete-images 2>/dev/null
        case host
            $bin __complete-hosts 2>/dev/null
        case files
            __fish_complete_path $cur | string replace -r '^' -- $prefix
        case dirs
            __fish_complete_directories $cur | string replace -r '^' -- $prefix
        case 'choices:*'
            string split ' ' -- (string replace 'choices:' '' -- $kind) | string replace -r '^' -- $prefix
    end
end

# `KEY=VALUE` entries: prints the value of KEY.
function __maqet_lookup --argument-names key
    for e in $argv[2..-1]
        set -l kv (string split -m1 = -- $e)
        if test "$kv[1]" = "$key"
            echo $kv[2]
            return
        end
    end
end

complete -c maqet -f -a '(__maqet_complete)'
"#;

/// A fish single-quoted string.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn kind_word(v: &Values) -> String {
    match v {
        Values::Choices(c) => format!("choices:{}", c.join(" ")),
        other => other.kind().to_string(),
    }
}

fn list(items: &[String]) -> String {
    items.iter().map(|i| q(i)).collect::<Vec<_>>().join(" ")
}

pub fn render(root: &Node) -> String {
    let mut s = String::from(
        "# fish completion for maqet. Generated from its command-line definitions by\n\
         # `maqet __generate completions fish`; do not edit.\n\n\
         # Sets the caller's subs, opts, descs (WORD=description), vals (OPTION=kind),\n\
         # canon (ALIAS=name), pos and last_repeats for a subcommand path.\n\
         function __maqet_node --no-scope-shadowing --argument-names node_path\n    \
         switch $node_path\n",
    );
    for n in root.walk() {
        let mut subs = Vec::new();
        let mut descs = Vec::new();
        let mut canon = Vec::new();
        for c in &n.subcommands {
            for w in std::iter::once(c.name()).chain(c.aliases.iter().map(String::as_str)) {
                subs.push(w.to_string());
                descs.push(format!("{w}={}", c.about));
                if w != c.name() {
                    canon.push(format!("{w}={}", c.name()));
                }
            }
        }
        let mut opts = Vec::new();
        let mut vals = Vec::new();
        for o in &n.opts {
            for name in &o.names {
                opts.push(name.clone());
                descs.push(format!("{name}={}", o.help));
                if let Some(v) = &o.value {
                    vals.push(format!("{name}={}", kind_word(v)));
                }
            }
        }
        let pos: Vec<String> = n.positionals.iter().map(kind_word).collect();
        let _ = writeln!(s, "        case {}", q(&n.key()));
        let _ = writeln!(s, "            set subs {}", list(&subs));
        let _ = writeln!(s, "            set opts {}", list(&opts));
        let _ = writeln!(s, "            set descs {}", list(&descs));
        let _ = writeln!(s, "            set vals {}", list(&vals));
        let _ = writeln!(s, "            set canon {}", list(&canon));
        let _ = writeln!(s, "            set pos {}", list(&pos));
        let _ = writeln!(
            s,
            "            set last_repeats {}",
            u8::from(n.last_repeats)
        );
    }
    s.push_str(
        "        case '*'\n            set subs\n            set opts\n            set pos\n    end\nend\n",
    );
    s.push_str(WALKER);
    s
}

//! Operators compiled into the host, named by a step in place of a module
//! digest (`builtin:<name>`). The runtime runs them (`runtime::builtin`);
//! a spec only needs to know which names exist.

/// How a step names a builtin operator.
const PREFIX: &str = "builtin:";

/// A builtin operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// The `uppercase` plugin's logic: values upper-cased (Unicode text as
    /// text, other bytes in their ASCII letters); keys, headers and
    /// timestamps pass through.
    Uppercase,
}

impl Builtin {
    /// Every builtin, for listing in errors.
    const ALL: [Self; 1] = [Self::Uppercase];

    fn name(self) -> &'static str {
        match self {
            Self::Uppercase => "uppercase",
        }
    }

    /// How a step names it: `builtin:<name>`.
    pub fn reference(self) -> String {
        format!("{PREFIX}{}", self.name())
    }

    /// The builtin a step reference names: `None` when it names no builtin
    /// (a module digest), an error listing the builtins when it has the
    /// prefix but an unknown name.
    pub fn parse(reference: &str) -> Result<Option<Self>, String> {
        let Some(name) = reference.trim().strip_prefix(PREFIX) else {
            return Ok(None);
        };
        Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .map(Some)
            .ok_or_else(|| {
                let known: Vec<String> = Self::ALL.iter().map(|b| b.reference()).collect();
                format!(
                    "there is no builtin operator `{name}`; the builtins are {}",
                    known.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_unknown_names_list_the_builtins() {
        assert_eq!(
            Builtin::parse(&Builtin::Uppercase.reference()),
            Ok(Some(Builtin::Uppercase))
        );
        assert_eq!(Builtin::parse("sha256:abcdef"), Ok(None));
        let error = Builtin::parse("builtin:shout").expect_err("unknown builtin");
        assert!(error.contains("builtin:uppercase"), "{error}");
    }
}

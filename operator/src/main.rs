//! `flint-operator`: the Kubernetes side of Flint. Today it renders the Function CRD
//! (`flint-operator crd`), which `crds/function.yaml` and the Helm chart hold; the controller
//! that reconciles Functions into Deployments and Services builds on the same API crate.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Function CustomResourceDefinition as YAML (what crds/function.yaml holds).
    Crd,
}

fn main() {
    match Cli::parse().command {
        Command::Crd => print!("{}", flint_api::crd::yaml()),
    }
}

fn main() {
    std::process::exit(host_sim::cli::main(std::env::args().skip(1).collect()));
}

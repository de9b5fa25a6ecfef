fn main() {
    println!("nfsroot: under construction");
}

pragma circom 2.0.0;

// The test circuit of the circom proving path: the storage proof's three public inputs, in
// its order, and a small statement over private arrays, so its compiled artifacts stay a few
// kilobytes. It proves nothing about storage.

template Square() {
    signal input in;
    signal output out;
    out <== in * in;
}

// dataSetRoot = (...((entropy + slotIndex + cells[0])² + cells[1])² ... + cells[n-1])²
template Chain(n) {
    signal input entropy;
    signal input dataSetRoot;
    signal input slotIndex;
    signal input cells[n];

    signal acc[n + 1];
    component square[n];
    acc[0] <== entropy + slotIndex;
    for (var i = 0; i < n; i++) {
        square[i] = Square();
        square[i].in <== acc[i] + cells[i];
        acc[i + 1] <== square[i].out;
    }
    dataSetRoot === acc[n];
}

component main {public [entropy, dataSetRoot, slotIndex]} = Chain(4);

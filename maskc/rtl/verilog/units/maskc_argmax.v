// maskc BASE-DIE MODEL (fixed-function silicon, not personalization): the sampler's greedy
// argmax (docs/numerics.md "Sampling"): the index of the largest int32 logit, ties to the
// lowest id. Behavioural, one clock edge.
/* verilator lint_off WIDTH */  // deliberate: sign extension and truncation of integers
module maskc_argmax #(
  parameter V = 320,
  parameter TB = 9
) (
  input  wire clk,
  input  wire rst,
  input  wire start,
  input  wire [32 * V - 1:0] logits,
  output reg  [TB - 1:0] token,
  output reg  done
);
  integer j, best;
  reg signed [31:0] bv, v;
  always @(posedge clk) begin
    done <= 1'b0;
    if (rst) begin
      token <= 0;
    end else if (start) begin
      best = 0;
      bv = logits[31:0];
      for (j = 1; j < V; j = j + 1) begin
        v = logits[32 * j +: 32];
        if (v > bv) begin
          bv = v;
          best = j;
        end
      end
      token <= best[TB - 1:0];
      done <= 1'b1;
    end
  end
endmodule
